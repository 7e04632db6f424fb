//! The PKI of a throw-away control plane: one CA, the apiserver's serving
//! certificate, an admin client certificate and the service-account signing key;
//! and [`TestCa`], for tests of servers that speak TLS.

use crate::Error;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use std::net::{IpAddr, Ipv4Addr};

/// PEM-encoded material, written to the control plane's directory.
pub struct Pki {
    /// The CA that signed both the serving and the client certificate.
    pub ca_cert: String,
    /// kube-apiserver's serving certificate for 127.0.0.1 and localhost.
    pub serving_cert: String,
    /// The serving certificate's key.
    pub serving_key: String,
    /// A client certificate in `system:masters`.
    pub admin_cert: String,
    /// The admin certificate's key.
    pub admin_key: String,
    /// The key that signs service-account tokens.
    pub service_account_key: String,
    /// Its public half, which verifies them.
    pub service_account_pub: String,
}

fn pki_err(e: rcgen::Error) -> Error {
    Error::Pki(e.to_string())
}

impl Pki {
    /// Generates fresh keys and certificates (ECDSA P-256).
    pub fn generate() -> Result<Self, Error> {
        let ca_key = KeyPair::generate().map_err(pki_err)?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(pki_err)?;
        ca_params.distinguished_name = name("promotion-testenv-ca", None);
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca_params.self_signed(&ca_key).map_err(pki_err)?;
        let issuer = Issuer::new(ca_params, ca_key);

        let serving_key = KeyPair::generate().map_err(pki_err)?;
        let mut serving = CertificateParams::new(vec!["localhost".to_string()]).map_err(pki_err)?;
        serving.distinguished_name = name("kube-apiserver", None);
        serving
            .subject_alt_names
            .push(SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        serving.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let serving_cert = serving.signed_by(&serving_key, &issuer).map_err(pki_err)?;

        let admin_key = KeyPair::generate().map_err(pki_err)?;
        let mut admin = CertificateParams::new(Vec::<String>::new()).map_err(pki_err)?;
        admin.distinguished_name = name("promotion-testenv-admin", Some("system:masters"));
        admin.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let admin_cert = admin.signed_by(&admin_key, &issuer).map_err(pki_err)?;

        let service_account_key = KeyPair::generate().map_err(pki_err)?;

        Ok(Self {
            ca_cert: ca_cert.pem(),
            serving_cert: serving_cert.pem(),
            serving_key: serving_key.serialize_pem(),
            admin_cert: admin_cert.pem(),
            admin_key: admin_key.serialize_pem(),
            service_account_pub: service_account_key.public_key_pem(),
            service_account_key: service_account_key.serialize_pem(),
        })
    }
}

fn name(common_name: &str, organization: Option<&str>) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    if let Some(org) = organization {
        dn.push(DnType::OrganizationName, org);
    }
    dn
}

/// A certificate authority of its own, for a test that serves TLS and trusts only it.
pub struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    /// The CA certificate (PEM), for the client's trust store.
    pub cert_pem: String,
}

impl TestCa {
    /// A fresh CA named `name`.
    pub fn new(name_: &str) -> Result<Self, Error> {
        let key = KeyPair::generate().map_err(pki_err)?;
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(pki_err)?;
        params.distinguished_name = name(name_, None);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key).map_err(pki_err)?;
        Ok(Self {
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        })
    }

    /// A serving certificate for `localhost` and 127.0.0.1 with a fresh key, named
    /// `common_name`: (certificate PEM, key PEM).
    pub fn serving(&self, common_name: &str) -> Result<(String, String), Error> {
        let key = KeyPair::generate().map_err(pki_err)?;
        let mut params = CertificateParams::new(vec!["localhost".to_string()]).map_err(pki_err)?;
        params.distinguished_name = name(common_name, None);
        params
            .subject_alt_names
            .push(SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let cert = params.signed_by(&key, &self.issuer).map_err(pki_err)?;
        Ok((cert.pem(), key.serialize_pem()))
    }
}

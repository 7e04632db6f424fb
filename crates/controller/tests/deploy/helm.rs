//! Renders the Helm chart in deploy/helm without the helm binary, which this
//! project cannot install: Go's text/template (the `gtmpl` crate) plus the few
//! Helm functions the chart uses.
//!
//! The subset: `.Values` (values.yaml deep-merged with overrides, as `-f` does),
//! `.Release.Name/.Namespace/.Service/.IsInstall/.IsUpgrade/.Revision`,
//! `.Chart.Name/.Version/.AppVersion`, `if/else`, `with`, `range` over lists,
//! `define` in `templates/_*.tpl`, and the functions `include`, `toYaml`,
//! `nindent`, `indent`, `quote`, `default`, `sha256sum` (plus Go's built-ins
//! such as `printf`, `eq`, `not`, `and`, `or`). Stricter than Helm where Helm
//! is silent: a missing value (`<no value>`) is an error, not an empty string.
//! Not supported: `range` over maps (gtmpl iterates them in no fixed order),
//! `.Files`, `.Capabilities`, `tpl`, `lookup`, `required` and the rest of Sprig.

use gtmpl::{Context, Func, FuncError, Template, Value};
use sha2::Digest as _;
use std::cell::RefCell;
use std::collections::HashMap;
use std::path::Path;

thread_local! {
    /// The chart's helper files (name, text), for `include`: gtmpl functions are
    /// plain `fn` pointers and cannot capture them.
    static HELPERS: RefCell<Vec<(String, String)>> = const { RefCell::new(Vec::new()) };
}

/// The Helm functions this renderer provides.
const FUNCS: &[(&str, Func)] = &[
    ("include", include),
    ("toYaml", to_yaml),
    ("nindent", nindent),
    ("indent", indent),
    ("quote", quote),
    ("default", default),
    ("sha256sum", sha256sum),
];

/// Where a release goes.
pub struct Release<'a> {
    pub name: &'a str,
    pub namespace: &'a str,
}

/// What `helm install` would send: the CRDs as they are, then the rendered templates.
pub struct Rendered {
    /// `crds/*.yaml`: (file name, text), not templated (as Helm does).
    pub crds: Vec<(String, String)>,
    /// `templates/*.yaml`: (file name, rendered text).
    pub templates: Vec<(String, String)>,
    /// `templates/NOTES.txt`, rendered.
    pub notes: String,
}

fn read(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))
}

/// Files of `dir` (sorted by name) whose name passes `keep`.
fn files(dir: &Path, keep: impl Fn(&str) -> bool) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for entry in entries {
        let path = entry.map_err(|e| e.to_string())?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()).map(str::to_owned) else {
            continue;
        };
        if path.is_file() && keep(&name) {
            out.push((name, read(&path)?));
        }
    }
    out.sort();
    Ok(out)
}

/// Helm's `-f`: maps merge key by key, anything else replaces; a null removes the key.
pub fn merge(base: &mut serde_yaml::Value, over: &serde_yaml::Value) {
    match (base, over) {
        (serde_yaml::Value::Mapping(b), serde_yaml::Value::Mapping(o)) => {
            for (k, v) in o {
                if v.is_null() {
                    b.remove(k);
                } else if let Some(existing) = b.get_mut(k) {
                    merge(existing, v);
                } else {
                    b.insert(k.clone(), v.clone());
                }
            }
        }
        (b, o) => *b = o.clone(),
    }
}

/// Renders `chart` for `release` with values.yaml merged with `overrides`.
pub fn render(
    chart: &Path,
    release: &Release<'_>,
    overrides: &serde_yaml::Value,
) -> Result<Rendered, String> {
    let meta: serde_yaml::Value = serde_yaml::from_str(&read(&chart.join("Chart.yaml"))?)
        .map_err(|e| format!("Chart.yaml: {e}"))?;
    let field = |k: &str| {
        meta.get(k)
            .and_then(|v| v.as_str())
            .map(str::to_owned)
            .ok_or_else(|| format!("Chart.yaml has no {k}"))
    };
    let mut values: serde_yaml::Value = serde_yaml::from_str(&read(&chart.join("values.yaml"))?)
        .map_err(|e| format!("values.yaml: {e}"))?;
    merge(&mut values, overrides);

    let mut top = HashMap::new();
    top.insert("Values".to_string(), to_value(&values));
    top.insert(
        "Chart".to_string(),
        Value::Map(HashMap::from([
            ("Name".to_string(), Value::from(field("name")?)),
            ("Version".to_string(), Value::from(field("version")?)),
            ("AppVersion".to_string(), Value::from(field("appVersion")?)),
        ])),
    );
    top.insert(
        "Release".to_string(),
        Value::Map(HashMap::from([
            ("Name".to_string(), Value::from(release.name)),
            ("Namespace".to_string(), Value::from(release.namespace)),
            ("Service".to_string(), Value::from("Helm")),
            ("IsInstall".to_string(), Value::Bool(true)),
            ("IsUpgrade".to_string(), Value::Bool(false)),
            ("Revision".to_string(), Value::from(1u64)),
        ])),
    );
    let top = Value::Map(top);

    let dir = chart.join("templates");
    let helpers = files(&dir, |n| n.starts_with('_') && n.ends_with(".tpl"))?;
    HELPERS.with(|h| *h.borrow_mut() = helpers.clone());
    let mut templates = Vec::new();
    for (name, text) in files(&dir, |n| n.ends_with(".yaml") || n.ends_with(".yml"))? {
        let out = render_one(&name, &text, &helpers, &top)?;
        templates.push((name, out));
    }
    let notes = match files(&dir, |n| n == "NOTES.txt")?.pop() {
        Some((name, text)) => render_one(&name, &text, &helpers, &top)?,
        None => String::new(),
    };
    let crds = files(&chart.join("crds"), |n| n.ends_with(".yaml"))?;
    Ok(Rendered {
        crds,
        templates,
        notes,
    })
}

fn template(name: &str, helpers: &[(String, String)]) -> Result<Template, String> {
    let mut t = Template::with_name(name);
    t.add_funcs(FUNCS);
    for (file, text) in helpers {
        t.add_template(file.as_str(), text.as_str())
            .map_err(|e| format!("{file}: {e}"))?;
    }
    Ok(t)
}

fn render_one(
    name: &str,
    text: &str,
    helpers: &[(String, String)],
    top: &Value,
) -> Result<String, String> {
    let mut t = template(name, helpers)?;
    t.parse(text).map_err(|e| format!("{name}: {e}"))?;
    let out = t
        .render(&Context::from(top.clone()))
        .map_err(|e| format!("{name}: {e}"))?;
    if let Some(at) = out.find("<no value>") {
        let line = out[..at].lines().count();
        return Err(format!(
            "{name}: line {line} uses a value that is not set (`<no value>`)"
        ));
    }
    Ok(out)
}

/// YAML as a template value; maps become Go maps (a missing key is no value).
fn to_value(v: &serde_yaml::Value) -> Value {
    match v {
        serde_yaml::Value::Null => Value::Nil,
        serde_yaml::Value::Bool(b) => Value::Bool(*b),
        serde_yaml::Value::Number(n) => match (n.as_u64(), n.as_i64(), n.as_f64()) {
            (Some(u), _, _) => Value::from(u),
            (None, Some(i), _) => Value::from(i),
            (None, None, Some(f)) => Value::from(f),
            (None, None, None) => Value::Nil,
        },
        serde_yaml::Value::String(s) => Value::from(s.as_str()),
        serde_yaml::Value::Sequence(items) => Value::Array(items.iter().map(to_value).collect()),
        serde_yaml::Value::Mapping(m) => Value::Map(
            m.iter()
                .map(|(k, v)| (key_string(k), to_value(v)))
                .collect(),
        ),
        serde_yaml::Value::Tagged(t) => to_value(&t.value),
    }
}

fn key_string(k: &serde_yaml::Value) -> String {
    match k {
        serde_yaml::Value::String(s) => s.clone(),
        other => serde_yaml::to_string(other)
            .map(|s| s.trim_end().to_string())
            .unwrap_or_default(),
    }
}

/// A template value as YAML, map keys sorted as Go's YAML encoder does.
fn to_yaml_value(v: &Value) -> Result<serde_yaml::Value, FuncError> {
    Ok(match v {
        Value::NoValue | Value::Nil => serde_yaml::Value::Null,
        Value::Bool(b) => serde_yaml::Value::Bool(*b),
        Value::String(s) => serde_yaml::Value::String(s.clone()),
        Value::Number(n) => match (n.as_u64(), n.as_i64(), n.as_f64()) {
            (Some(u), _, _) => u.into(),
            (None, Some(i), _) => i.into(),
            (None, None, Some(f)) => f.into(),
            (None, None, None) => serde_yaml::Value::Null,
        },
        Value::Array(items) => {
            serde_yaml::Value::Sequence(items.iter().map(to_yaml_value).collect::<Result<_, _>>()?)
        }
        Value::Map(m) | Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            let mut out = serde_yaml::Mapping::new();
            for k in keys {
                out.insert(serde_yaml::Value::String(k.clone()), to_yaml_value(&m[k])?);
            }
            serde_yaml::Value::Mapping(out)
        }
        Value::Function(_) => {
            return Err(FuncError::Generic(
                "toYaml: cannot encode a function".into(),
            ));
        }
    })
}

/// Sprig's `strval`: strings as they are, anything else printed.
fn strval(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn arg<'a>(args: &'a [Value], i: usize, name: &str) -> Result<&'a Value, FuncError> {
    args.get(i)
        .ok_or_else(|| FuncError::AtLeastXArgs(name.into(), i + 1))
}

fn count(v: &Value, name: &str) -> Result<usize, FuncError> {
    match v {
        Value::Number(n) => n
            .as_u64()
            .and_then(|n| usize::try_from(n).ok())
            .ok_or_else(|| FuncError::Generic(format!("{name}: {n} is not a count"))),
        other => Err(FuncError::Generic(format!(
            "{name}: {other} is not a number"
        ))),
    }
}

/// `include NAME DOT`: renders a named template (from a helper file) to a string.
fn include(args: &[Value]) -> Result<Value, FuncError> {
    let name = strval(arg(args, 0, "include")?);
    let dot = args.get(1).cloned().unwrap_or(Value::Nil);
    let helpers = HELPERS.with(|h| h.borrow().clone());
    let t = template(&name, &helpers).map_err(FuncError::Generic)?;
    if !t.tree_set.contains_key(&name) {
        return Err(FuncError::Generic(format!(
            "include: no template named {name:?}"
        )));
    }
    let out = t
        .render(&Context::from(dot))
        .map_err(|e| FuncError::Generic(format!("include {name:?}: {e}")))?;
    Ok(Value::from(out))
}

/// `toYaml V`: V as YAML without the final newline (as Helm's).
fn to_yaml(args: &[Value]) -> Result<Value, FuncError> {
    let v = to_yaml_value(arg(args, 0, "toYaml")?)?;
    let text = serde_yaml::to_string(&v).map_err(|e| FuncError::Generic(e.to_string()))?;
    Ok(Value::from(text.trim_end_matches('\n')))
}

fn pad(n: usize, s: &str) -> String {
    let spaces = " ".repeat(n);
    format!("{spaces}{}", s.replace('\n', &format!("\n{spaces}")))
}

/// `indent N S`: every line of S indented by N spaces.
fn indent(args: &[Value]) -> Result<Value, FuncError> {
    let n = count(arg(args, 0, "indent")?, "indent")?;
    Ok(Value::from(pad(n, &strval(arg(args, 1, "indent")?))))
}

/// `nindent N S`: a newline, then S indented.
fn nindent(args: &[Value]) -> Result<Value, FuncError> {
    let n = count(arg(args, 0, "nindent")?, "nindent")?;
    Ok(Value::from(format!(
        "\n{}",
        pad(n, &strval(arg(args, 1, "nindent")?))
    )))
}

/// Go's `%q` for the characters a manifest holds.
fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `quote V...`: each non-nil argument as a double-quoted string, space-separated.
fn quote(args: &[Value]) -> Result<Value, FuncError> {
    let parts: Vec<String> = args
        .iter()
        .filter(|v| !matches!(v, Value::Nil | Value::NoValue))
        .map(|v| go_quote(&strval(v)))
        .collect();
    Ok(Value::from(parts.join(" ")))
}

/// Sprig's emptiness: nil, false, 0, "" and empty lists and maps.
fn empty(v: &Value) -> bool {
    match v {
        Value::NoValue | Value::Nil => true,
        Value::Bool(b) => !b,
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Map(m) | Value::Object(m) => m.is_empty(),
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::Function(_) => false,
    }
}

/// `default D V`: V unless it is empty, then D.
fn default(args: &[Value]) -> Result<Value, FuncError> {
    let fallback = arg(args, 0, "default")?;
    match args.get(1) {
        Some(given) if !empty(given) => Ok(given.clone()),
        _ => Ok(fallback.clone()),
    }
}

/// `sha256sum S`: the hex SHA-256 of S.
fn sha256sum(args: &[Value]) -> Result<Value, FuncError> {
    let digest = sha2::Sha256::digest(strval(arg(args, 0, "sha256sum")?).as_bytes());
    Ok(Value::from(hex::encode(digest)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(text: &str, values: &str) -> Result<String, String> {
        let values: serde_yaml::Value = serde_yaml::from_str(values).expect("values");
        let top = Value::Map(HashMap::from([("Values".to_string(), to_value(&values))]));
        render_one("t", text, &[], &top)
    }

    #[test]
    fn the_helm_functions_behave_as_helm_s() {
        let yaml = run(
            "a:{{ toYaml .Values.m | nindent 2 }}\nb: {{ .Values.s | quote }}\nc: {{ .Values.none | default \"d\" }}\ne: {{ .Values.f | quote }}",
            "m: {z: 1, a: [x, y]}\ns: 'say \"hi\"'\nnone: ''\nf: false",
        )
        .expect("renders");
        assert_eq!(
            yaml,
            "a:\n  a:\n  - x\n  - y\n  z: 1\nb: \"say \\\"hi\\\"\"\nc: d\ne: \"false\""
        );
    }

    #[test]
    fn a_missing_value_is_an_error() {
        let err = run("x: {{ .Values.typo }}", "real: 1").expect_err("refused");
        assert!(err.contains("not set"), "{err}");
    }

    #[test]
    fn overrides_merge_like_helm_values_files() {
        let mut base: serde_yaml::Value =
            serde_yaml::from_str("a: {b: 1, c: 2}\nl: [1, 2]\nk: v").expect("base");
        let over: serde_yaml::Value =
            serde_yaml::from_str("a: {c: 3}\nl: [9]\nk: null").expect("over");
        merge(&mut base, &over);
        let want: serde_yaml::Value =
            serde_yaml::from_str("a: {b: 1, c: 3}\nl: [9]").expect("want");
        assert_eq!(base, want);
    }
}

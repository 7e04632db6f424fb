//! Reading resources as the server's Table output, the way `kubectl get` shows them.

use crate::Error;
use kube::Client;
use serde_json::Value;

/// Lists `plural` of `promotion.io/v1alpha1` in `namespace` as a `meta.k8s.io/v1` Table.
pub async fn get(client: &Client, plural: &str, namespace: &str) -> Result<Value, Error> {
    let path = format!(
        "/apis/{}/{}/namespaces/{namespace}/{plural}",
        promotion_api::GROUP,
        promotion_api::VERSION
    );
    let req = http::Request::get(path)
        .header("Accept", "application/json;as=Table;v=v1;g=meta.k8s.io")
        .body(Vec::new())
        .map_err(|e| Error::Kube(e.to_string()))?;
    let text = client
        .request_text(req)
        .await
        .map_err(|e| Error::Kube(e.to_string()))?;
    serde_json::from_str(&text).map_err(|e| Error::Kube(format!("table is not JSON: {e}")))
}

/// The column names of a Table.
pub fn columns(table: &Value) -> Vec<String> {
    table["columnDefinitions"]
        .as_array()
        .map(|cols| {
            cols.iter()
                .filter(|c| c["priority"].as_i64().unwrap_or(0) == 0)
                .filter_map(|c| c["name"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// The rows of a Table as strings, in column order (priority-0 columns only).
pub fn rows(table: &Value) -> Vec<Vec<String>> {
    let shown: Vec<bool> = table["columnDefinitions"]
        .as_array()
        .map(|cols| {
            cols.iter()
                .map(|c| c["priority"].as_i64().unwrap_or(0) == 0)
                .collect()
        })
        .unwrap_or_default();
    table["rows"]
        .as_array()
        .map(|rows| {
            rows.iter()
                .map(|row| {
                    row["cells"]
                        .as_array()
                        .map(|cells| {
                            cells
                                .iter()
                                .zip(shown.iter().chain(std::iter::repeat(&true)))
                                .filter(|(_, shown)| **shown)
                                .map(|(cell, _)| match cell {
                                    Value::String(s) => s.clone(),
                                    Value::Null => "<none>".into(),
                                    other => other.to_string(),
                                })
                                .collect()
                        })
                        .unwrap_or_default()
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Renders a Table like `kubectl get` does: upper-case headers, aligned columns.
pub fn render(table: &Value) -> String {
    let header: Vec<String> = columns(table).iter().map(|c| c.to_uppercase()).collect();
    let rows = rows(table);
    let mut widths: Vec<usize> = header.iter().map(String::len).collect();
    for row in &rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.len());
            }
        }
    }
    let line = |cells: &[String]| -> String {
        let mut out = String::new();
        for (i, cell) in cells.iter().enumerate() {
            let w = widths.get(i).copied().unwrap_or(0);
            out.push_str(&format!("{cell:<w$}   "));
        }
        out.trim_end().to_string() + "\n"
    };
    let mut out = line(&header);
    if rows.is_empty() {
        return "No resources found.\n".into();
    }
    for row in &rows {
        out.push_str(&line(row));
    }
    out
}

//! HTTP plumbing: query parsing, media-type negotiation and response builders.

use std::collections::HashMap;
use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::Response;
use serde_json::Value;

use crate::error::ApiError;

/// Response body type: whole documents or streamed watch events.
pub type Body = BoxBody<Bytes, Infallible>;

/// Query parameters, tolerant of `?&` and empty pairs, percent-decoded.
#[derive(Debug, Default)]
pub struct Query {
    pairs: HashMap<String, String>,
}

impl Query {
    /// Parses the raw query string.
    pub fn parse(raw: Option<&str>) -> Self {
        let mut pairs = HashMap::new();
        for pair in raw.unwrap_or_default().split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            pairs.insert(decode(key), decode(value));
        }
        Self { pairs }
    }

    /// A parameter's value.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs.get(key).map(String::as_str)
    }

    /// A boolean flag (`true`/`1`).
    pub fn flag(&self, key: &str) -> bool {
        matches!(self.get(key), Some("true") | Some("1"))
    }

    /// Whether `dryRun=All` was requested.
    pub fn dry_run(&self) -> bool {
        self.get("dryRun") == Some("All")
    }
}

fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                match u8::from_str_radix(
                    std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("zz"),
                    16,
                ) {
                    Ok(b) => {
                        out.push(b);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// What representation the client asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// The object (or list) itself.
    Json,
    /// A `meta.k8s.io` Table.
    Table,
    /// `PartialObjectMetadata` / `PartialObjectMetadataList`.
    Metadata,
}

/// Picks the first supported media range of the Accept header.
pub fn negotiate(accept: &str) -> Result<Format, ApiError> {
    if accept.trim().is_empty() {
        return Ok(Format::Json);
    }
    for media in accept.split(',') {
        let params: Vec<&str> = media.split(';').map(str::trim).collect();
        let base = params.first().copied().unwrap_or_default();
        if !matches!(base, "application/json" | "*/*" | "application/*") {
            continue;
        }
        let as_param = params.iter().find_map(|p| p.strip_prefix("as="));
        match as_param {
            Some("Table") => return Ok(Format::Table),
            Some("PartialObjectMetadata") | Some("PartialObjectMetadataList") => {
                return Ok(Format::Metadata);
            }
            Some(_) => continue,
            None => return Ok(Format::Json),
        }
    }
    Err(ApiError::not_acceptable(accept))
}

/// A JSON response with optional `Warning` headers.
pub fn json(code: u16, body: &Value, warnings: &[String]) -> Response<Body> {
    json_text(code, body.to_string(), "application/json", warnings)
}

/// A response from pre-serialised JSON.
pub fn json_text(
    code: u16,
    body: String,
    content_type: &str,
    warnings: &[String],
) -> Response<Body> {
    let mut builder = Response::builder()
        .status(code)
        .header("Content-Type", content_type)
        .header("Cache-Control", "no-cache, private");
    for warning in warnings {
        let escaped = warning.replace('\\', "\\\\").replace('"', "\\\"");
        builder = builder.header("Warning", format!("299 - \"{escaped}\""));
    }
    builder
        .body(Full::new(Bytes::from(body)).boxed())
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new()).boxed()))
}

/// A plain-text response (health endpoints).
pub fn text(code: u16, body: &'static str) -> Response<Body> {
    Response::builder()
        .status(code)
        .header("Content-Type", "text/plain; charset=utf-8")
        .body(Full::new(Bytes::from_static(body.as_bytes())).boxed())
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new()).boxed()))
}

/// The `Status` response for an error.
pub fn error(err: &ApiError) -> Response<Body> {
    json(err.code, &err.to_status(), &[])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_tolerates_leading_ampersand_and_decodes() {
        let q = Query::parse(Some(
            "&watch=true&fieldSelector=metadata.name%3Dw1&labelSelector=a+in+(b)",
        ));
        assert!(q.flag("watch"));
        assert_eq!(q.get("fieldSelector"), Some("metadata.name=w1"));
        assert_eq!(q.get("labelSelector"), Some("a in (b)"));
        assert_eq!(Query::parse(Some("")).get("x"), None);
        assert_eq!(Query::parse(Some("a=%")).get("a"), Some("%"));
    }

    #[test]
    fn negotiation_prefers_first_supported() {
        let kubectl = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";
        assert_eq!(negotiate(kubectl).expect("table"), Format::Table);
        assert_eq!(
            negotiate("application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1")
                .expect("meta"),
            Format::Metadata
        );
        assert_eq!(negotiate("").expect("json"), Format::Json);
        assert!(negotiate("application/vnd.kubernetes.protobuf").is_err());
    }
}

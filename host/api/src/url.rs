//! URL parsing with the semantics of Go's `net/url`, which Metal3 uses for BMC addresses and
//! image URLs. Matching it matters: an address upstream accepts must be accepted here, with the
//! same host, port and path, and the same inputs must fail.
//!
//! One deliberate difference follows current Go releases rather than older ones: a bracketed
//! host must hold an IPv6 literal (`[192.0.2.1]` is refused, as Go does since 1.24.8/1.25.2).

use std::net::Ipv6Addr;

/// A parsed URL, split the way Go's `url.URL` splits it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GoUrl {
    /// Lower-cased scheme, empty when absent.
    pub scheme: String,
    /// What follows `scheme:` when it does not start with `/` (as in `ipmi:10.0.0.1`).
    pub opaque: String,
    /// `user[:password]` before `@`, when present.
    pub userinfo: Option<String>,
    /// Host with optional `:port`, brackets kept for IPv6 literals.
    pub host: String,
    /// Path, unescaped.
    pub path: String,
    /// Query without the `?`.
    pub raw_query: Option<String>,
    /// Fragment without the `#`.
    pub fragment: Option<String>,
}

/// Why a URL does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    /// The URL is empty.
    #[error("empty url")]
    Empty,
    /// The URL starts with `:`.
    #[error("missing protocol scheme")]
    MissingScheme,
    /// A relative path whose first segment contains `:`.
    #[error("first path segment in URL cannot contain colon")]
    ColonInFirstSegment,
    /// A request URI that is neither absolute nor an absolute path.
    #[error("invalid URI for request")]
    NotRequestUri,
    /// A character that may not appear in a host.
    #[error("invalid character {0:?} in host name")]
    InvalidHostCharacter(char),
    /// The text after the host's last `:` is not a number.
    #[error("invalid port {0:?} after host")]
    InvalidPort(String),
    /// A `[` without its closing `]`.
    #[error("missing ']' in host")]
    UnclosedBracket,
    /// Brackets around something that is not an IPv6 address.
    #[error("IP literal in brackets must be IPv6, found {0:?}")]
    BracketedNonIpv6(String),
    /// A malformed `%` escape.
    #[error("invalid URL escape {0:?}")]
    InvalidEscape(String),
    /// A control character.
    #[error("invalid control character in URL")]
    ControlCharacter,
}

impl GoUrl {
    /// The host without port and brackets (Go's `Hostname()`).
    pub fn hostname(&self) -> &str {
        let (host, _) = split_host_port(&self.host);
        host.strip_prefix('[')
            .and_then(|rest| rest.strip_suffix(']'))
            .unwrap_or(host)
    }

    /// The port, if one was written (Go's `Port()`); may be empty for `host:`.
    pub fn port(&self) -> Option<&str> {
        split_host_port(&self.host).1
    }
}

/// Parses like Go's `url.Parse` (fragment allowed, relative references allowed).
pub fn parse(raw: &str) -> Result<GoUrl, UrlError> {
    let (rest, fragment) = match raw.split_once('#') {
        Some((rest, fragment)) => (rest, Some(unescape(fragment)?)),
        None => (raw, None),
    };
    let mut url = parse_without_fragment(rest, false)?;
    url.fragment = fragment;
    Ok(url)
}

/// Parses like Go's `url.ParseRequestURI`: absolute URLs or absolute paths, no fragment.
pub fn parse_request_uri(raw: &str) -> Result<GoUrl, UrlError> {
    parse_without_fragment(raw, true)
}

fn parse_without_fragment(raw: &str, via_request: bool) -> Result<GoUrl, UrlError> {
    if raw.chars().any(|c| c.is_ascii_control()) {
        return Err(UrlError::ControlCharacter);
    }
    if raw.is_empty() && via_request {
        return Err(UrlError::Empty);
    }
    if raw == "*" {
        return Ok(GoUrl {
            path: "*".into(),
            ..GoUrl::default()
        });
    }

    let (scheme, rest) = split_scheme(raw)?;
    let mut url = GoUrl {
        scheme: scheme.to_ascii_lowercase(),
        ..GoUrl::default()
    };
    let rest = match rest.split_once('?') {
        Some((before, query)) => {
            url.raw_query = Some(query.to_string());
            before
        }
        None => rest,
    };

    if !rest.starts_with('/') {
        if !url.scheme.is_empty() {
            url.opaque = rest.to_string();
            return Ok(url);
        }
        if via_request {
            return Err(UrlError::NotRequestUri);
        }
        let first_segment = rest.split('/').next().unwrap_or_default();
        if first_segment.contains(':') {
            return Err(UrlError::ColonInFirstSegment);
        }
    }

    let has_authority = (!url.scheme.is_empty() || !via_request && !rest.starts_with("///"))
        && rest.starts_with("//");
    let path = if has_authority {
        let after = &rest[2..];
        let (authority, path) = match after.find('/') {
            Some(index) => after.split_at(index),
            None => (after, ""),
        };
        let (userinfo, host) = match authority.rsplit_once('@') {
            Some((userinfo, host)) => (Some(userinfo.to_string()), host),
            None => (None, authority),
        };
        url.userinfo = userinfo;
        url.host = parse_host(host)?;
        path
    } else {
        rest
    };
    url.path = unescape(path)?;
    Ok(url)
}

/// Go's `getScheme`: a letter followed by letters, digits, `+`, `-` or `.`, ending at `:`.
fn split_scheme(raw: &str) -> Result<(&str, &str), UrlError> {
    for (index, c) in raw.char_indices() {
        match c {
            'a'..='z' | 'A'..='Z' => {}
            '0'..='9' | '+' | '-' | '.' if index > 0 => {}
            ':' if index == 0 => return Err(UrlError::MissingScheme),
            ':' => return Ok((&raw[..index], &raw[index + 1..])),
            _ => return Ok(("", raw)),
        }
    }
    Ok(("", raw))
}

fn parse_host(host: &str) -> Result<String, UrlError> {
    if let Some(inner) = host.strip_prefix('[') {
        let close = inner.find(']').ok_or(UrlError::UnclosedBracket)?;
        let literal = &inner[..close];
        let after = &inner[close + 1..];
        if !valid_optional_port(after) {
            return Err(UrlError::InvalidPort(after.to_string()));
        }
        let address = literal.split('%').next().unwrap_or_default();
        if address.parse::<Ipv6Addr>().is_err() {
            return Err(UrlError::BracketedNonIpv6(literal.to_string()));
        }
        return Ok(host.to_string());
    }

    if let Some(colon) = host.rfind(':') {
        let port = &host[colon..];
        if !valid_optional_port(port) {
            return Err(UrlError::InvalidPort(port.to_string()));
        }
    }
    if let Some(bad) = host
        .chars()
        .find(|c| c.is_ascii() && !host_char_allowed(*c))
    {
        return Err(UrlError::InvalidHostCharacter(bad));
    }
    unescape(host)
}

/// Characters Go leaves unescaped in a host (it also admits `<`, `>` and `"`).
fn host_char_allowed(c: char) -> bool {
    c.is_ascii_alphanumeric()
        || matches!(
            c,
            '-' | '_'
                | '.'
                | '~'
                | '!'
                | '$'
                | '&'
                | '\''
                | '('
                | ')'
                | '*'
                | '+'
                | ','
                | ';'
                | '='
                | ':'
                | '['
                | ']'
                | '<'
                | '>'
                | '"'
                | '%'
        )
}

/// Empty, or `:` followed only by digits.
fn valid_optional_port(port: &str) -> bool {
    port.is_empty()
        || port
            .strip_prefix(':')
            .is_some_and(|digits| digits.chars().all(|c| c.is_ascii_digit()))
}

/// Splits `host[:port]` the way Go's `Hostname()`/`Port()` do.
fn split_host_port(host: &str) -> (&str, Option<&str>) {
    match host.rfind(':') {
        Some(colon) if valid_optional_port(&host[colon..]) && !host[colon..].contains(']') => {
            let before = &host[..colon];
            if before.starts_with('[') && !before.ends_with(']') {
                return (host, None);
            }
            (before, Some(&host[colon + 1..]))
        }
        _ => (host, None),
    }
}

/// Go's `net.SplitHostPort`: `host:port`, `[v6]:port`; the port may be any text.
pub fn split_host_port_strict(address: &str) -> Option<(&str, &str)> {
    let colon = address.rfind(':')?;
    let (host, port) = (&address[..colon], &address[colon + 1..]);
    if let Some(inner) = host.strip_prefix('[') {
        let inner = inner.strip_suffix(']')?;
        return (!inner.contains(['[', ']'])).then_some((inner, port));
    }
    (!host.contains([':', '[', ']'])).then_some((host, port))
}

fn unescape(text: &str) -> Result<String, UrlError> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] == b'%' {
            let hex = text.get(index + 1..index + 3).unwrap_or_default();
            let value = u8::from_str_radix(hex, 16)
                .ok()
                .filter(|_| hex.len() == 2)
                .ok_or_else(|| {
                    UrlError::InvalidEscape(
                        text.get(index..)
                            .unwrap_or_default()
                            .chars()
                            .take(3)
                            .collect(),
                    )
                })?;
            out.push(value);
            index += 3;
        } else {
            out.push(bytes[index]);
            index += 1;
        }
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absolute_urls_split_into_parts() {
        let url =
            parse("Redfish+HTTP://user@h.example:8000/redfish/v1/Systems/1?x=1#f").expect("parses");
        assert_eq!(url.scheme, "redfish+http");
        assert_eq!(url.userinfo.as_deref(), Some("user"));
        assert_eq!(url.hostname(), "h.example");
        assert_eq!(url.port(), Some("8000"));
        assert_eq!(url.path, "/redfish/v1/Systems/1");
        assert_eq!(url.raw_query.as_deref(), Some("x=1"));
        assert_eq!(url.fragment.as_deref(), Some("f"));
    }

    #[test]
    fn go_quirks_are_reproduced() {
        assert_eq!(
            parse("ipmi:10.0.0.1:623").expect("opaque").opaque,
            "10.0.0.1:623"
        );
        assert_eq!(parse("10.0.0.1:623"), Err(UrlError::ColonInFirstSegment));
        assert_eq!(parse("10.0.0.1").expect("path").path, "10.0.0.1");
        assert_eq!(parse("ipmi://h:").expect("empty port").port(), Some(""));
        assert_eq!(
            parse("ipmi://h:port"),
            Err(UrlError::InvalidPort(":port".into()))
        );
        assert_eq!(
            parse("ipmi://${X}"),
            Err(UrlError::InvalidHostCharacter('{'))
        );
        assert_eq!(
            parse("http://<host>:80/x")
                .expect("go allows <>")
                .hostname(),
            "<host>"
        );
        assert_eq!(parse(":x"), Err(UrlError::MissingScheme));
    }

    #[test]
    fn brackets_need_ipv6() {
        let url = parse("redfish://[fe80::1]:8000/x").expect("v6 parses");
        assert_eq!(url.hostname(), "fe80::1");
        assert_eq!(url.port(), Some("8000"));
        assert_eq!(
            parse("redfish://[192.0.2.1]:9000/"),
            Err(UrlError::BracketedNonIpv6("192.0.2.1".into()))
        );
        assert_eq!(parse("redfish://[fe80::1"), Err(UrlError::UnclosedBracket));
    }

    #[test]
    fn request_uris_must_be_absolute() {
        assert!(parse_request_uri("http://h/x").is_ok());
        assert!(parse_request_uri("/just/a/path").is_ok());
        assert_eq!(
            parse_request_uri("relative/path"),
            Err(UrlError::NotRequestUri)
        );
        assert_eq!(parse_request_uri(""), Err(UrlError::Empty));
    }

    #[test]
    fn strict_host_port_split_matches_go() {
        assert_eq!(
            split_host_port_strict("10.0.0.1:623"),
            Some(("10.0.0.1", "623"))
        );
        assert_eq!(
            split_host_port_strict("[fe80::1]:623"),
            Some(("fe80::1", "623"))
        );
        assert_eq!(split_host_port_strict("[fe80::1]"), None);
        assert_eq!(split_host_port_strict("a:b:c"), None);
    }
}

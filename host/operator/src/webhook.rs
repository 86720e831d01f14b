//! The validating admission webhook for BareMetalHosts, served over HTTPS.
//!
//! It runs the same admission rules as `ingot validate` and the embedded API server (the
//! `ingot_api::validation` module) and returns every problem at once. Creates and updates are
//! validated; deletes are always allowed, as upstream.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use ingot_api::validation::{self, Verdict};
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// The path the webhook configuration points at (the upstream path).
pub const VALIDATE_PATH: &str = "/validate-metal3-io-v1alpha1-baremetalhost";

/// The largest admission review accepted; a host object is far smaller.
const MAX_BODY_BYTES: usize = 4 << 20;

/// Failures starting the webhook server.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// The certificate chain could not be read.
    #[error("cannot read the webhook certificate")]
    Certificate(#[source] rustls::pki_types::pem::Error),
    /// The private key could not be read.
    #[error("cannot read the webhook private key")]
    Key(#[source] rustls::pki_types::pem::Error),
    /// The certificate and key were refused by TLS.
    #[error("the webhook certificate and key do not form a usable TLS identity")]
    Tls(#[source] rustls::Error),
    /// The address could not be bound.
    #[error("cannot listen on {address}")]
    Bind {
        /// The address.
        address: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// A bound HTTPS webhook server.
pub struct WebhookServer {
    listener: TcpListener,
    acceptor: TlsAcceptor,
}

impl WebhookServer {
    /// Binds the server with a PEM certificate chain and private key.
    pub async fn bind(
        address: SocketAddr,
        certificate_pem: &[u8],
        key_pem: &[u8],
    ) -> Result<Self, WebhookError> {
        let certificates = CertificateDer::pem_slice_iter(certificate_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(WebhookError::Certificate)?;
        let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(WebhookError::Key)?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(WebhookError::Tls)?
            .with_no_client_auth()
            .with_single_cert(certificates, key)
            .map_err(WebhookError::Tls)?;
        let listener = TcpListener::bind(address)
            .await
            .map_err(|source| WebhookError::Bind { address, source })?;
        Ok(WebhookServer {
            listener,
            acceptor: TlsAcceptor::from(Arc::new(config)),
        })
    }

    /// The bound address (useful with port 0).
    pub fn local_address(&self) -> Option<SocketAddr> {
        self.listener.local_addr().ok()
    }

    /// Serves admission reviews until the task is dropped.
    pub async fn serve(self) {
        loop {
            let (stream, peer) = match self.listener.accept().await {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(error = %error, "cannot accept a webhook connection");
                    continue;
                }
            };
            let acceptor = self.acceptor.clone();
            tokio::spawn(async move {
                let tls = match acceptor.accept(stream).await {
                    Ok(tls) => tls,
                    Err(error) => {
                        tracing::debug!(%peer, error = %error, "webhook TLS handshake failed");
                        return;
                    }
                };
                let service = hyper::service::service_fn(|request| async move {
                    Ok::<_, Infallible>(handle(request).await)
                });
                let connection = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), service);
                if let Err(error) = connection.await {
                    tracing::debug!(%peer, error = %error, "webhook connection ended with an error");
                }
            });
        }
    }
}

async fn handle(request: Request<Incoming>) -> Response<Full<Bytes>> {
    if request.method() != Method::POST || request.uri().path() != VALIDATE_PATH {
        return respond(StatusCode::NOT_FOUND, Bytes::from_static(b"not found"));
    }
    let body = match Limited::new(request.into_body(), MAX_BODY_BYTES)
        .collect()
        .await
    {
        Ok(body) => body.to_bytes(),
        Err(_) => {
            return respond(
                StatusCode::PAYLOAD_TOO_LARGE,
                Bytes::from_static(b"admission review too large"),
            );
        }
    };
    let review = review(&body);
    match serde_json::to_vec(&review) {
        Ok(encoded) => respond(StatusCode::OK, Bytes::from(encoded)),
        Err(_) => respond(
            StatusCode::INTERNAL_SERVER_ERROR,
            Bytes::from_static(b"cannot encode the review"),
        ),
    }
}

fn respond(status: StatusCode, body: Bytes) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    response
}

/// Answers one admission review given as JSON.
pub fn review(body: &[u8]) -> AdmissionReview<DynamicObject> {
    let request: AdmissionRequest<DynamicObject> =
        match serde_json::from_slice::<AdmissionReview<DynamicObject>>(body).map(TryInto::try_into)
        {
            Ok(Ok(request)) => request,
            Ok(Err(error)) => {
                return AdmissionResponse::invalid(format!("not an admission request: {error}"))
                    .into_review();
            }
            Err(error) => {
                return AdmissionResponse::invalid(format!(
                    "cannot decode the admission review: {error}"
                ))
                .into_review();
            }
        };
    decide(&request).into_review()
}

fn decide(request: &AdmissionRequest<DynamicObject>) -> AdmissionResponse {
    let response = AdmissionResponse::from(request);
    let (Operation::Create | Operation::Update, Some(object)) =
        (&request.operation, &request.object)
    else {
        return response;
    };
    let judged = as_value(object).and_then(|object| {
        let old = request.old_object.as_ref().map(as_value).transpose()?;
        validation::judge(&object, old.as_ref()).map_err(|undecodable| undecodable.to_string())
    });
    match judged {
        Ok(verdict) => with_verdict(response, &verdict),
        Err(reason) => response.deny(reason),
    }
}

fn as_value(object: &DynamicObject) -> Result<Value, String> {
    serde_json::to_value(object).map_err(|error| format!("cannot read the object: {error}"))
}

/// Refuses with every message joined; a forbidden field (a cross-namespace reference) makes
/// the whole answer 403, as upstream.
fn with_verdict(mut response: AdmissionResponse, verdict: &Verdict) -> AdmissionResponse {
    let warnings: Vec<String> = verdict.warnings.iter().map(ToString::to_string).collect();
    if !warnings.is_empty() {
        response.warnings = Some(warnings);
    }
    if verdict.admitted() {
        return response;
    }

    let message = verdict
        .errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ");
    let mut response = response.deny(message);
    let (code, reason) = if verdict.forbidden() {
        (403, "Forbidden")
    } else {
        (422, "Invalid")
    };
    response.result.code = code;
    response.result.reason = reason.into();
    response
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn review_of(
        operation: &str,
        object: serde_json::Value,
        old: Option<serde_json::Value>,
    ) -> serde_json::Value {
        json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": "0df28fbd-5f5f-11e8-bc74-36e6bb280816",
                "kind": {"group": "metal3.io", "version": "v1alpha1", "kind": "BareMetalHost"},
                "resource": {"group": "metal3.io", "version": "v1alpha1", "resource": "baremetalhosts"},
                "name": "host-0",
                "namespace": "default",
                "operation": operation,
                "userInfo": {"username": "admin"},
                "object": object,
                "oldObject": old,
                "dryRun": false,
            }
        })
    }

    fn host(spec: serde_json::Value) -> serde_json::Value {
        json!({"apiVersion": "metal3.io/v1alpha1", "kind": "BareMetalHost",
            "metadata": {"name": "host-0", "namespace": "default"}, "spec": spec})
    }

    fn answer(review: serde_json::Value) -> AdmissionResponse {
        let body = serde_json::to_vec(&review).expect("encode");
        super::review(&body).response.expect("a response")
    }

    #[test]
    fn a_valid_host_is_admitted() {
        let response = answer(review_of(
            "CREATE",
            host(
                json!({"online": true, "bmc": {"address": "redfish://10.0.0.1/redfish/v1/Systems/1", "credentialsName": "bmc"}}),
            ),
            None,
        ));

        assert!(response.allowed);
        assert_eq!(response.uid, "0df28fbd-5f5f-11e8-bc74-36e6bb280816");
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let spec = json!({"online": false, "disablePowerOff": true,
            "image": {"url": "http://x/os.img"},
            "bmc": {"address": "ilo4://10.0.0.1", "credentialsName": "bmc"}});
        let response = answer(review_of("CREATE", host(spec), None));

        assert!(!response.allowed);
        assert_eq!(response.result.code, 422);
        let message = response.result.message;
        assert!(message.contains("Unknown BMC type"), "{message}");
        assert!(message.contains("checksum"), "{message}");
        assert!(message.contains("online"), "{message}");
    }

    #[test]
    fn cross_namespace_references_are_forbidden() {
        let spec = json!({"online": true, "userData": {"name": "data", "namespace": "other"}});
        let response = answer(review_of("CREATE", host(spec), None));

        assert!(!response.allowed);
        assert_eq!(response.result.code, 403);
    }

    #[test]
    fn immutable_fields_are_checked_on_update() {
        let old = host(json!({"online": true, "bootMACAddress": "00:11:22:33:44:55"}));
        let new = host(json!({"online": true, "bootMACAddress": "00:11:22:33:44:66"}));
        let response = answer(review_of("UPDATE", new, Some(old)));

        assert!(!response.allowed);
        assert!(
            response.result.message.contains("bootMACAddress"),
            "{}",
            response.result.message
        );
    }

    #[test]
    fn deletes_are_allowed_and_garbage_is_refused() {
        assert!(
            answer(review_of(
                "DELETE",
                serde_json::Value::Null,
                Some(host(json!({"online": true})))
            ))
            .allowed
        );
        let garbage = super::review(b"{not json").response.expect("a response");
        assert!(!garbage.allowed);
    }
}

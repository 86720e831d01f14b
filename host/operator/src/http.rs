//! The operator's own HTTP endpoints: `/healthz` (the process is alive), `/readyz` (it is
//! leading and its controller runs) and `/metrics` (Prometheus text format).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::metrics::Metrics;

/// Failures of the HTTP endpoint server.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
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

/// Whether the operator is ready to serve: set once it leads and its controller runs.
#[derive(Debug, Clone, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    /// Marks the operator ready or not.
    pub fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::SeqCst);
    }

    /// Whether the operator is ready.
    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// A bound endpoint server, not yet serving.
pub struct Endpoints {
    listener: TcpListener,
    metrics: Arc<Metrics>,
    readiness: Readiness,
}

impl Endpoints {
    /// Binds the endpoint server.
    pub async fn bind(
        address: SocketAddr,
        metrics: Arc<Metrics>,
        readiness: Readiness,
    ) -> Result<Self, HttpError> {
        let listener = TcpListener::bind(address)
            .await
            .map_err(|source| HttpError::Bind { address, source })?;
        Ok(Endpoints {
            listener,
            metrics,
            readiness,
        })
    }

    /// The bound address (useful with port 0).
    pub fn local_address(&self) -> Option<SocketAddr> {
        self.listener.local_addr().ok()
    }

    /// Serves requests until the task is dropped.
    pub async fn serve(self) {
        loop {
            let (stream, _) = match self.listener.accept().await {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(error = %error, "cannot accept an endpoint connection");
                    continue;
                }
            };
            let metrics = self.metrics.clone();
            let readiness = self.readiness.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request| {
                    let response = respond(&request, &metrics, &readiness);
                    async move { Ok::<_, Infallible>(response) }
                });
                let connection = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service);
                if let Err(error) = connection.await {
                    tracing::debug!(error = %error, "endpoint connection ended with an error");
                }
            });
        }
    }
}

fn respond(
    request: &Request<Incoming>,
    metrics: &Metrics,
    readiness: &Readiness,
) -> Response<Full<Bytes>> {
    match request.uri().path() {
        "/healthz" | "/livez" => text(StatusCode::OK, "ok".to_string()),
        "/readyz" if readiness.is_ready() => text(StatusCode::OK, "ok".to_string()),
        "/readyz" => text(
            StatusCode::SERVICE_UNAVAILABLE,
            "not leading yet".to_string(),
        ),
        "/metrics" => text(StatusCode::OK, metrics.render()),
        _ => text(StatusCode::NOT_FOUND, "not found".to_string()),
    }
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    response
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    async fn get(address: SocketAddr, path: &str) -> String {
        let mut stream = tokio::net::TcpStream::connect(address)
            .await
            .expect("connect");
        let request =
            format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.expect("send");
        let mut response = String::new();
        stream.read_to_string(&mut response).await.expect("read");
        response
    }

    #[tokio::test]
    async fn endpoints_report_health_readiness_and_metrics() {
        let readiness = Readiness::default();
        let metrics = Arc::new(Metrics::new());
        metrics.reconcile_failed();
        let endpoints = Endpoints::bind(
            SocketAddr::from(([127, 0, 0, 1], 0)),
            metrics,
            readiness.clone(),
        )
        .await
        .expect("bind");
        let address = endpoints.local_address().expect("address");
        let server = tokio::spawn(endpoints.serve());

        assert!(get(address, "/healthz").await.starts_with("HTTP/1.1 200"));
        assert!(get(address, "/readyz").await.starts_with("HTTP/1.1 503"));
        readiness.set(true);
        assert!(get(address, "/readyz").await.starts_with("HTTP/1.1 200"));
        assert!(
            get(address, "/metrics")
                .await
                .contains("ingot_reconcile_failures_total 1")
        );
        assert!(get(address, "/nothing").await.starts_with("HTTP/1.1 404"));
        server.abort();
    }
}

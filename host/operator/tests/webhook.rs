//! The admission webhook over real HTTPS, as the API server would call it.

use std::sync::Arc;

use ingot_operator::webhook::{VALIDATE_PATH, WebhookServer};
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn post(
    address: std::net::SocketAddr,
    ca: CertificateDer<'static>,
    path: &str,
    body: &Value,
) -> (u16, Value) {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca).expect("trust the test CA");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocols")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let stream = tokio::net::TcpStream::connect(address)
        .await
        .expect("connect");
    let name = ServerName::try_from("localhost").expect("server name");
    let mut tls = connector
        .connect(name, stream)
        .await
        .expect("TLS handshake");

    let payload = serde_json::to_vec(body).expect("encode");
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        payload.len()
    );
    tls.write_all(head.as_bytes()).await.expect("send head");
    tls.write_all(&payload).await.expect("send body");
    let mut response = Vec::new();
    let _ = tls.read_to_end(&mut response).await;
    let text = String::from_utf8_lossy(&response).to_string();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    let body = text.split("\r\n\r\n").nth(1).unwrap_or_default();
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

#[tokio::test]
async fn webhook_answers_admission_reviews_over_https() {
    let certified =
        rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("certificate");
    let certificate_pem = certified.cert.pem();
    let key_pem = certified.signing_key.serialize_pem();
    let server = WebhookServer::bind(
        "127.0.0.1:0".parse().expect("address"),
        certificate_pem.as_bytes(),
        key_pem.as_bytes(),
    )
    .await
    .expect("bind webhook");
    let address = server.local_address().expect("address");
    let serving = tokio::spawn(server.serve());
    let ca = certified.cert.der().clone();

    let review = |name: &str| {
        json!({
            "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {
                "uid": "7f0b2891-916f-4ed6-b7cd-27bff1815a8c",
                "kind": {"group": "metal3.io", "version": "v1alpha1", "kind": "BareMetalHost"},
                "resource": {"group": "metal3.io", "version": "v1alpha1", "resource": "baremetalhosts"},
                "name": name, "namespace": "default", "operation": "CREATE", "userInfo": {},
                "object": {"apiVersion": "metal3.io/v1alpha1", "kind": "BareMetalHost",
                    "metadata": {"name": name, "namespace": "default"},
                    "spec": {"online": true, "bmc": {"address": "ipmi://10.0.0.5", "credentialsName": "bmc"}}},
            }
        })
    };

    let (status, accepted) = post(address, ca.clone(), VALIDATE_PATH, &review("worker-0")).await;
    assert_eq!(status, 200);
    assert_eq!(accepted["response"]["allowed"], true);
    assert_eq!(
        accepted["response"]["uid"],
        "7f0b2891-916f-4ed6-b7cd-27bff1815a8c"
    );

    let (_, refused) = post(
        address,
        ca.clone(),
        VALIDATE_PATH,
        &review("7f0b2891-916f-4ed6-b7cd-27bff1815a8c"),
    )
    .await;
    assert_eq!(refused["response"]["allowed"], false);
    assert!(
        refused["response"]["status"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("UUID"),
        "{refused}"
    );

    let (status, _) = post(address, ca, "/elsewhere", &review("worker-0")).await;
    assert_eq!(status, 404);
    serving.abort();
}

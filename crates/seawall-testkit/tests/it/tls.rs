use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use seawall_testkit::{Conn, Error, RedisServer, Reply, Role};

use crate::util::{TestResult, accepts};

/// Runs `redis-cli --tls --cacert <ca_cert> -h 127.0.0.1 -p <port> <args>`: a real TLS
/// client (OpenSSL) that verifies the server's certificate.
fn redis_cli_tls(server: &RedisServer, ca_cert: &Path, args: &[&str]) -> std::io::Result<Output> {
    let mut cmd = Command::new("redis-cli");
    cmd.arg("--tls").arg("--cacert").arg(ca_cert).args([
        "-h",
        "127.0.0.1",
        "-p",
        &server.port().to_string(),
    ]);
    if let Some(password) = server.password() {
        cmd.args(["-a", password, "--no-auth-warning"]);
    }
    cmd.args(args).output()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn config_get(server: &RedisServer, key: &str) -> seawall_testkit::Result<String> {
    let reply = server.connect()?.cmd(&["CONFIG", "GET", key])?;
    Ok(reply
        .as_array()
        .and_then(|a| a.get(1))
        .and_then(Reply::as_str)
        .unwrap_or("?")
        .to_owned())
}

#[test]
fn tls_server_answers_through_the_control_path() -> TestResult {
    let server = RedisServer::builder().tls().start()?;
    assert!(server.is_tls());
    assert_eq!(
        server.url(),
        format!("rediss://127.0.0.1:{}", server.port())
    );
    let ca = server.ca_cert_path().ok_or("no CA path")?;
    assert!(ca.starts_with(server.dir()) && ca.is_file(), "{ca:?}");

    let mut conn = server.connect()?;
    assert_eq!(conn.addr(), server.addr());
    assert_eq!(conn.cmd(&["PING"])?, Reply::Simple("PONG".into()));
    assert_eq!(conn.cmd(&["SET", "k", "v"])?, Reply::Simple("OK".into()));
    assert_eq!(conn.cmd(&["GET", "k"])?.as_str(), Some("v"));
    assert_eq!(server.role()?, Role::Master);

    // TLS only: no plain-text TCP listener, and clients need no certificate.
    assert_eq!(config_get(&server, "port")?, "0");
    assert_eq!(config_get(&server, "tls-port")?, server.port().to_string());
    assert_eq!(config_get(&server, "tls-auth-clients")?, "no");

    // A plain-text server has none of this.
    let plain = RedisServer::start()?;
    assert!(!plain.is_tls());
    assert!(plain.ca_cert_path().is_none() && plain.ca_cert_pem().is_none());
    assert!(plain.url().starts_with("redis://"));
    Ok(())
}

#[test]
fn password_goes_into_the_rediss_url_and_the_control_path() -> TestResult {
    let server = RedisServer::builder().tls().password("p@ss").start()?;
    assert_eq!(
        server.url(),
        format!("rediss://:p%40ss@127.0.0.1:{}", server.port())
    );
    assert_eq!(server.connect()?.cmd(&["PING"])?.as_str(), Some("PONG"));

    let ca = server.ca_cert_path().ok_or("no CA path")?;
    let out = redis_cli_tls(&server, ca, &["PING"])?;
    assert_eq!(stdout(&out), "PONG", "{out:?}");
    Ok(())
}

#[test]
fn plain_text_on_the_tls_port_gets_no_redis_reply() -> TestResult {
    let server = RedisServer::builder().tls().start()?;
    // The TCP handshake succeeds: the port is open, it just does not speak plain RESP.
    assert!(accepts(server.addr()));
    let mut conn = Conn::connect_timeout(server.addr(), Duration::from_secs(5))?;
    let result = conn.cmd(&["PING"]);
    // The server takes our bytes for a malformed ClientHello, aborts the handshake and
    // closes the connection (possibly after a TLS alert, which is no RESP either).
    assert!(
        matches!(result, Err(Error::Io { .. } | Error::Protocol { .. })),
        "{result:?}"
    );

    // A real client that forgets TLS fails too.
    let out = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &server.port().to_string(), "PING"])
        .output()?;
    assert!(!out.status.success(), "{out:?}");
    assert_ne!(stdout(&out), "PONG", "{out:?}");
    Ok(())
}

#[test]
fn ca_file_is_a_pem_certificate() -> TestResult {
    let server = RedisServer::builder().tls().start()?;
    let ca = server.ca_cert_path().ok_or("no CA path")?;
    let pem = std::fs::read_to_string(ca)?;
    assert_eq!(Some(pem.as_str()), server.ca_cert_pem());

    let body = pem
        .trim_end()
        .strip_prefix("-----BEGIN CERTIFICATE-----")
        .and_then(|rest| rest.strip_suffix("-----END CERTIFICATE-----"))
        .ok_or("not one PEM CERTIFICATE block")?;
    assert!(!body.contains("-----"), "more than one PEM block");
    let der = base64_decode(body)?;
    assert_eq!(Some(der.as_slice()), server.ca_cert_der());
    // A certificate is one DER SEQUENCE spanning the whole buffer.
    assert_eq!(der.first(), Some(&0x30));
    assert_eq!(der_len(&der)?, der.len());
    Ok(())
}

#[test]
fn redis_cli_verifies_the_server_against_the_ca_only() -> TestResult {
    let server = RedisServer::builder().tls().start()?;
    let ca = server.ca_cert_path().ok_or("no CA path")?;
    let out = redis_cli_tls(&server, ca, &["PING"])?;
    assert!(out.status.success(), "{out:?}");
    assert_eq!(stdout(&out), "PONG", "{out:?}");

    // Another CA, even with the same name, does not vouch for the server.
    let dir = tempfile::tempdir()?;
    let wrong_ca = dir.path().join("wrong-ca.crt");
    std::fs::write(&wrong_ca, other_ca_pem()?)?;
    let out = redis_cli_tls(&server, &wrong_ca, &["PING"])?;
    assert!(!out.status.success(), "{out:?}");
    assert_ne!(stdout(&out), "PONG", "{out:?}");
    let said = format!("{out:?}");
    assert!(said.contains("certificate verify failed"), "{said}");
    Ok(())
}

#[test]
fn kill_restart_and_pause_keep_working() -> TestResult {
    let mut server = RedisServer::builder().tls().start()?;
    let port = server.port();
    let ca = server.ca_cert_path().ok_or("no CA path")?.to_owned();
    let files = ["ca.crt", "server.crt", "server.key"];
    let before: Vec<Vec<u8>> = files
        .iter()
        .map(|f| std::fs::read(server.dir().join(f)))
        .collect::<Result<_, _>>()?;

    server.kill()?;
    assert!(!accepts(server.addr()));
    assert!(server.connect().is_err());

    server.restart()?;
    assert_eq!(server.port(), port);
    assert_eq!(server.ca_cert_path(), Some(ca.as_path()));
    let after: Vec<Vec<u8>> = files
        .iter()
        .map(|f| std::fs::read(server.dir().join(f)))
        .collect::<Result<_, _>>()?;
    assert!(before == after, "certificate files changed across restart");
    assert_eq!(server.connect()?.cmd(&["PING"])?.as_str(), Some("PONG"));
    let out = redis_cli_tls(&server, &ca, &["PING"])?;
    assert_eq!(stdout(&out), "PONG", "{out:?}");

    server.pause(Duration::from_millis(50))?;
    assert_eq!(server.connect()?.cmd(&["PING"])?.as_str(), Some("PONG"));
    Ok(())
}

#[test]
fn taken_fixed_tls_port_fails_with_the_log_tail() -> TestResult {
    let taken = std::net::TcpListener::bind("127.0.0.1:0")?;
    let port = taken.local_addr()?.port();
    let err = RedisServer::builder()
        .tls()
        .port(port)
        .start()
        .expect_err("the port is taken");
    assert!(matches!(err, Error::Exited { .. }), "{err:?}");
    assert!(err.to_string().contains("Address already in use"), "{err}");
    Ok(())
}

/// A self-signed CA unrelated to the testkit's, under the same common name.
fn other_ca_pem() -> Result<String, rcgen::Error> {
    let mut params = rcgen::CertificateParams::default();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "seawall-testkit throwaway CA");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    let key = rcgen::KeyPair::generate()?;
    Ok(params.self_signed(&key)?.pem())
}

/// Decodes standard, padded base64, skipping line breaks.
fn base64_decode(text: &str) -> Result<Vec<u8>, String> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let symbols: Vec<u8> = text.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    if !symbols.len().is_multiple_of(4) {
        return Err(format!(
            "base64 length {} is not a multiple of 4",
            symbols.len()
        ));
    }
    let mut out = Vec::with_capacity(symbols.len() / 4 * 3);
    for chunk in symbols.chunks(4) {
        let padding = chunk.iter().rev().take_while(|&&b| b == b'=').count();
        let mut bits: u32 = 0;
        for &symbol in chunk {
            let value = match symbol {
                b'=' => 0,
                _ => ALPHABET
                    .iter()
                    .position(|&a| a == symbol)
                    .ok_or_else(|| format!("{:?} is not base64", char::from(symbol)))?,
            };
            bits = (bits << 6) | u32::try_from(value).map_err(|e| e.to_string())?;
        }
        let bytes = bits.to_be_bytes();
        out.extend_from_slice(&bytes[1..4 - padding]);
    }
    Ok(out)
}

/// The total length (header included) of the DER element at the start of `der`.
fn der_len(der: &[u8]) -> Result<usize, String> {
    let first = *der.get(1).ok_or("truncated DER header")?;
    if first < 0x80 {
        return Ok(2 + usize::from(first));
    }
    let count = usize::from(first & 0x7f);
    let bytes = der.get(2..2 + count).ok_or("truncated DER length")?;
    let len = bytes
        .iter()
        .fold(0_usize, |len, &b| (len << 8) | usize::from(b));
    Ok(2 + count + len)
}

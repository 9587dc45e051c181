//! The service's admin API as the runner uses it: creating the campaigns
//! and sales a scenario needs, and reading the audit and the standings the
//! invariants are checked against (the service counts them in its database
//! and its store, not the runner).

use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// A client of one service (or of a fleet's load balancer).
#[derive(Debug, Clone)]
pub(crate) struct Admin {
    base: String,
    token: String,
    client: reqwest::Client,
}

/// What went wrong talking to the service.
pub(crate) type Failure = String;

impl Admin {
    pub(crate) fn new(base: &str, token: &str) -> Self {
        Self {
            base: base.trim_end_matches('/').to_owned(),
            token: token.to_owned(),
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap_or_default(),
        }
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Result<Value, Failure> {
        let response = request
            .bearer_auth(&self.token)
            .send()
            .await
            .map_err(|error| format!("the service did not answer: {error}"))?;
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            return Err(format!("the service answered {status}: {body}"));
        }
        Ok(body)
    }

    async fn get(&self, path: &str) -> Result<Value, Failure> {
        self.send(self.client.get(format!("{}{path}", self.base)))
            .await
    }

    async fn post(&self, path: &str, body: &Value) -> Result<Value, Failure> {
        self.send(self.client.post(format!("{}{path}", self.base)).json(body))
            .await
    }

    /// Waits until the service answers `/readyz`.
    pub(crate) async fn wait_ready(&self, within: Duration) -> Result<(), Failure> {
        let deadline = Instant::now() + within;
        loop {
            let ready = self
                .client
                .get(format!("{}/readyz", self.base))
                .send()
                .await
                .is_ok_and(|response| response.status().is_success());
            if ready {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "{} did not become ready within {within:?}",
                    self.base
                ));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Creates a coupon campaign open now; answers its id.
    pub(crate) async fn campaign(&self, name: &str, quantity: u64) -> Result<i64, Failure> {
        let created = self
            .post(
                "/api/promotions/campaigns",
                &json!({"name": name, "quantity": quantity}),
            )
            .await?;
        created["id"]
            .as_i64()
            .ok_or_else(|| format!("a campaign without an id: {created}"))
    }

    /// Creates a time sale open now; answers its id.
    pub(crate) async fn sale(&self, name: &str, stock: u64) -> Result<i64, Failure> {
        let created = self
            .post(
                "/api/promotions/sales",
                &json!({"name": name, "stock": stock}),
            )
            .await?;
        created["id"]
            .as_i64()
            .ok_or_else(|| format!("a sale without an id: {created}"))
    }

    /// The audit, once every acknowledged order is written (or `within`
    /// has passed: the audit then shows what is missing).
    pub(crate) async fn drained_audit(&self, within: Duration) -> Result<Value, Failure> {
        let deadline = Instant::now() + within;
        loop {
            let audit = self.get("/api/promotions/audit").await?;
            let drained = audit["orders_queued"] == 0
                && audit["orders_written"] == audit["orders_acknowledged"];
            if drained || Instant::now() > deadline {
                return Ok(audit);
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Campaigns and sales with their counts from the store and the rows.
    pub(crate) async fn standings(&self) -> Result<Value, Failure> {
        self.get("/api/promotions").await
    }

    /// The sum of a counter over `/metrics` (one instance's, behind a load
    /// balancer).
    pub(crate) async fn counter(&self, name: &str) -> Result<f64, Failure> {
        let text = self
            .client
            .get(format!("{}/metrics", self.base))
            .send()
            .await
            .map_err(|error| format!("/metrics did not answer: {error}"))?
            .text()
            .await
            .map_err(|error| format!("/metrics did not answer: {error}"))?;
        Ok(text
            .lines()
            .filter(|line| line.starts_with(name))
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum())
    }
}

/// The row of campaign or sale `id` in the standings.
pub(crate) fn standing<'a>(standings: &'a Value, list: &str, id: i64) -> Option<&'a Value> {
    standings[list]
        .as_array()?
        .iter()
        .find(|row| row["id"].as_i64() == Some(id))
}

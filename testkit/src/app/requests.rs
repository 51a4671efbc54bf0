//! The HTTP requests tests send to the platform under test, with the
//! organisation's API key, a user's token or no credentials.

use std::{fmt::Display, time::Duration};

use reqwest::{Method, RequestBuilder};
use serde_json::Value;

use super::TestApp;

impl TestApp {
    /// A URL on the API.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A POST of the `multipart/form-data` `body` (parts separated by
    /// `boundary`) to `url` (whole: a bench's api may run elsewhere) with
    /// bearer `key`, ready to send.
    pub fn multipart_post(
        &self,
        url: &str,
        key: &str,
        boundary: &str,
        body: impl Into<reqwest::Body>,
    ) -> RequestBuilder {
        self.client
            .post(url)
            .bearer_auth(key)
            .header(
                "content-type",
                format!("multipart/form-data; boundary={boundary}"),
            )
            .body(body)
    }

    /// The text of the API's `/metrics` page (asked without credentials).
    pub async fn metrics_page(&self) -> String {
        self.get_anonymous("/metrics").await.text().await.unwrap()
    }

    /// The API's OpenAPI document, `/openapi.json` (asked without credentials).
    pub async fn openapi_document(&self) -> Value {
        self.get_anonymous("/openapi.json")
            .await
            .json()
            .await
            .unwrap()
    }

    /// GETs `path` without credentials.
    pub async fn get_anonymous(&self, path: &str) -> reqwest::Response {
        self.client.get(self.url(path)).send().await.unwrap()
    }

    /// POSTs the JSON `body` to `path` without credentials.
    pub async fn post_anonymous(&self, path: &str, body: &Value) -> reqwest::Response {
        let req = self.client.post(self.url(path)).json(body);
        req.send().await.unwrap()
    }

    /// A request for `method path` with bearer `token`.
    fn with_token(&self, method: Method, path: &str, token: impl Display) -> RequestBuilder {
        self.client
            .request(method, self.url(path))
            .bearer_auth(token)
    }

    /// GETs `path` with bearer `token`.
    pub async fn get_with_token(&self, path: &str, token: impl Display) -> reqwest::Response {
        let req = self.with_token(Method::GET, path, token);
        req.send().await.unwrap()
    }

    /// POSTs the JSON `body` to `path` with bearer `token`.
    pub async fn post_with_token(
        &self,
        path: &str,
        token: impl Display,
        body: &Value,
    ) -> reqwest::Response {
        let req = self.with_token(Method::POST, path, token).json(body);
        req.send().await.unwrap()
    }

    /// POSTs to `path` with bearer `token` and no body.
    pub async fn post_empty_with_token(
        &self,
        path: &str,
        token: impl Display,
    ) -> reqwest::Response {
        let req = self.with_token(Method::POST, path, token);
        req.send().await.unwrap()
    }

    /// PUTs the JSON `body` to `path` with bearer `token`.
    pub async fn put_with_token(
        &self,
        path: &str,
        token: impl Display,
        body: &Value,
    ) -> reqwest::Response {
        let req = self.with_token(Method::PUT, path, token).json(body);
        req.send().await.unwrap()
    }

    /// PATCHes `path` with bearer `token` and no body.
    pub async fn patch_with_token(&self, path: &str, token: impl Display) -> reqwest::Response {
        let req = self.with_token(Method::PATCH, path, token);
        req.send().await.unwrap()
    }

    /// GETs `path` with this app's key.
    pub async fn get_with_key(&self, path: &str) -> reqwest::Response {
        self.get_with_token(path, &self.api_key).await
    }

    /// The JSON at `path`, read with this app's key; the answer must be 200.
    pub async fn get_ok_json(&self, path: &str) -> Value {
        let resp = self.get_with_key(path).await;
        assert_eq!(resp.status(), 200);
        resp.json().await.unwrap()
    }

    /// POSTs the JSON `body` to `path` with this app's key.
    pub async fn post_with_key(&self, path: &str, body: &Value) -> reqwest::Response {
        self.post_with_token(path, &self.api_key, body).await
    }

    /// PUTs the JSON `body` to `path` with this app's key.
    pub async fn put_with_key(&self, path: &str, body: &Value) -> reqwest::Response {
        self.put_with_token(path, &self.api_key, body).await
    }

    /// POSTs a JSON send with this app's key.
    pub async fn send_email(&self, body: &Value) -> reqwest::Response {
        self.post_send(&self.api_key, None, body).await
    }

    /// POSTs a JSON send with `key` and, when given, an `Idempotency-Key`.
    pub async fn post_send(
        &self,
        key: &str,
        idempotency_key: Option<&str>,
        body: &Value,
    ) -> reqwest::Response {
        let mut req = self
            .client
            .post(self.url("/api/v1/services/notifications/send"))
            .bearer_auth(key)
            .json(body);
        if let Some(k) = idempotency_key {
            req = req.header("idempotency-key", k);
        }
        req.send().await.expect("the api answers")
    }

    /// POSTs `n` copies of `body` with `concurrency` requests in flight;
    /// returns each answer's status and latency.
    pub async fn send_many(
        &self,
        n: usize,
        concurrency: usize,
        body: &Value,
    ) -> Vec<(u16, Duration)> {
        use futures::StreamExt;
        futures::stream::iter(0..n)
            .map(|_| async move {
                let started = std::time::Instant::now();
                let status = self.send_email(body).await.status().as_u16();
                (status, started.elapsed())
            })
            .buffer_unordered(concurrency)
            .collect()
            .await
    }
}

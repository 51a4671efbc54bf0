//! The HTTP client that calls organisations' webhook endpoints, guarded
//! against server-side request forgery.
//!
//! Endpoint URLs are checked when they are registered, but a host name can
//! later resolve elsewhere (DNS rebinding). So the client resolves names
//! itself ([`GuardedResolver`]) and drops every address
//! [`shared::webhooks::forbidden_reason`] refuses; an IP-literal URL, which
//! never reaches a resolver, is checked again before each call. Redirects
//! are not followed (a 3xx is a failed attempt), and no proxy is used, so the
//! address connected to is the one checked.

use std::{sync::Arc, time::Duration};

use reqwest::{
    Client, StatusCode,
    dns::{Addrs, Name, Resolve, Resolving},
    header::CONTENT_TYPE,
    redirect,
};
use shared::webhooks::{check_url, resolve_allowed, sign};

/// Resolves host names, keeping only the addresses webhooks may reach.
#[derive(Debug, Clone, Copy)]
pub struct GuardedResolver {
    allow_loopback: bool,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let allow_loopback = self.allow_loopback;
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let (allowed, refused) = resolve_allowed(&host, 0, allow_loopback).await?;
            if allowed.is_empty() {
                let why = refused.unwrap_or("no address");
                return Err(format!("the endpoint's host resolves only to {why}").into());
            }
            let addrs: Addrs = Box::new(allowed.into_iter());
            Ok(addrs)
        })
    }
}

/// Calls webhook endpoints.
#[derive(Debug, Clone)]
pub struct WebhookClient {
    client: Client,
    allow_loopback: bool,
}

/// How one call ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallResult {
    /// A 2xx answer.
    Accepted(u16),
    /// Anything else: the status code if the endpoint answered, and why.
    Refused(Option<u16>, String),
}

impl WebhookClient {
    /// A client whose calls give up after `timeout`.
    pub fn new(timeout: Duration, allow_loopback: bool) -> anyhow::Result<Self> {
        let client = Client::builder()
            .dns_resolver(Arc::new(GuardedResolver { allow_loopback }))
            .redirect(redirect::Policy::none())
            .no_proxy()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .user_agent(concat!("notify-webhooks/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self {
            client,
            allow_loopback,
        })
    }

    /// POSTs `body` to `url`, signed with `secret` as delivery `id` at
    /// `timestamp` (unix seconds).
    pub async fn post(
        &self,
        url: &str,
        secret: &str,
        id: &str,
        timestamp: i64,
        body: Vec<u8>,
    ) -> CallResult {
        let url = match check_url(url, self.allow_loopback) {
            Ok(u) => u,
            Err(why) => return CallResult::Refused(None, format!("the endpoint URL {why}")),
        };
        let signature = sign(secret, id, timestamp, &body);
        let sent = self
            .client
            .post(url)
            .header(CONTENT_TYPE, "application/json")
            .header("webhook-id", id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(body)
            .send()
            .await;
        match sent {
            Ok(resp) => {
                let status = resp.status();
                if status.is_success() {
                    CallResult::Accepted(status.as_u16())
                } else {
                    CallResult::Refused(Some(status.as_u16()), describe(status))
                }
            }
            Err(e) => CallResult::Refused(None, describe_error(&e)),
        }
    }
}

fn describe(status: StatusCode) -> String {
    if status.is_redirection() {
        format!("the endpoint answered {status}; redirects are not followed")
    } else {
        format!("the endpoint answered {status}")
    }
}

fn describe_error(e: &reqwest::Error) -> String {
    shared::webhooks::describe_call_error(
        e,
        e.is_timeout(),
        e.is_connect(),
        [
            "no answer from the endpoint in time",
            "cannot connect to the endpoint",
            "the call to the endpoint failed",
        ],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_resolver_drops_forbidden_addresses() {
        let resolver = GuardedResolver {
            allow_loopback: false,
        };
        let refused = resolver
            .resolve("localhost".parse().unwrap())
            .await
            .err()
            .expect("localhost resolves only to loopback");
        assert!(refused.to_string().contains("loopback"), "{refused}");
        let allowed = GuardedResolver {
            allow_loopback: true,
        }
        .resolve("localhost".parse().unwrap())
        .await
        .expect("allowed with the flag");
        assert!(allowed.into_iter().all(|a| a.ip().is_loopback()));
    }

    #[tokio::test]
    async fn a_name_resolving_to_loopback_is_not_connected_to() {
        // A listener that would accept, on a loopback address.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let client = WebhookClient::new(Duration::from_secs(2), false).unwrap();
        // `check_url` would refuse `localhost` by name, so the call goes
        // through a name only the resolver can judge.
        let result = client
            .client
            .post(format!("http://localhost:{port}/"))
            .send()
            .await;
        let err = result.expect_err("the resolver refuses loopback");
        assert!(err.is_connect() || err.to_string().contains("dns"), "{err}");
    }
}

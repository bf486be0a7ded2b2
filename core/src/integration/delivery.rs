//! Delivery attempts: one signed `POST` per attempt over ureq 3, and what the answer means for
//! the message (delivered, retry when, failed, endpoint gone).
//!
//! Each worker thread owns one `ureq::Agent` (its own keep-alive pool) built by [`agent`]: the
//! whole attempt is bounded by `timeout_ms` (and so are its connect and its wait for the answer), redirects are not followed (a 3xx is a failure),
//! status codes are answers rather than errors, environment proxies are ignored (a proxy would
//! resolve the target itself, around the SSRF guard), and names resolve through
//! [`GuardedResolver`], so the connection goes to exactly the address that was vetted.

use std::io::Read as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::outbox::Message;
use super::signing::sign;
use super::ssrf::GuardedResolver;

/// Bytes of a receiver's answer read (and discarded) so the connection can be reused.
const MAX_ANSWER_BYTES: u64 = 64 * 1024;

/// Retry settings (`[webhooks]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first attempt.
    pub retry_attempts: u32,
    pub retry_delay: Duration,
    pub max_retry_delay: Duration,
}

impl RetryPolicy {
    /// The wait before retry number `n` (1-based): `retry_delay × 2^(n-1)`, ±20% jitter from
    /// `unit` (uniform in 0..1), then capped.
    pub fn delay(&self, n: u32, unit: f64) -> Duration {
        let base = self.retry_delay.as_secs_f64() * 2f64.powi(n.saturating_sub(1).min(62) as i32);
        let jittered = base * (0.8 + 0.4 * unit.clamp(0.0, 1.0));
        Duration::from_secs_f64(jittered.min(self.max_retry_delay.as_secs_f64()))
    }
}

/// A uniform random number in 0..1 from the OS (through UUIDv4).
pub fn random_unit() -> f64 {
    let bits = uuid::Uuid::new_v4().as_u64_pair().1 >> 11;
    bits as f64 / (1u64 << 53) as f64
}

/// One attempt to make.
pub struct Job {
    pub endpoint_id: String,
    pub url: String,
    pub key: Arc<[u8]>,
    pub message: Arc<Message>,
}

/// What an attempt got.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    /// The status code, if an answer came.
    pub status: Option<u16>,
    /// Why it failed, if it did (transport error, timeout, non-2xx).
    pub error: Option<String>,
    /// A `Retry-After` in seconds on a 429 or 503.
    pub retry_after: Option<Duration>,
    pub elapsed: Duration,
}

impl Answer {
    pub fn succeeded(&self) -> bool {
        self.error.is_none() && self.status.is_some_and(|s| (200..300).contains(&s))
    }

    pub fn gone(&self) -> bool {
        self.status == Some(410)
    }
}

/// A worker's HTTP agent (see the module docs).
pub fn agent(timeout: Duration, allow_private: bool) -> ureq::Agent {
    let config = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .proxy(None)
        .timeout_global(Some(timeout))
        .timeout_connect(Some(timeout))
        .timeout_recv_response(Some(timeout))
        .user_agent(concat!("herald/", env!("CARGO_PKG_VERSION")))
        .max_idle_connections_per_host(8)
        .build();
    ureq::Agent::with_parts(
        config,
        ureq::unversioned::transport::DefaultConnector::new(),
        GuardedResolver { allow_private },
    )
}

/// Makes one attempt: signs the body for this moment and posts it.
pub fn attempt(agent: &ureq::Agent, job: &Job) -> Answer {
    let started = Instant::now();
    let message_id = job.message.id.to_string();
    let timestamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let signature = sign(&job.key, &message_id, timestamp, &job.message.body);
    let result = agent
        .post(&job.url)
        .header("webhook-id", &message_id)
        .header("webhook-timestamp", &timestamp.to_string())
        .header("webhook-signature", &signature)
        .header("content-type", "application/json")
        .send(&job.message.body[..]);
    let mut response = match result {
        Ok(response) => response,
        Err(error) => {
            return Answer {
                status: None,
                error: Some(error.to_string()),
                retry_after: None,
                elapsed: started.elapsed(),
            }
        }
    };
    let status = response.status().as_u16();
    let retry_after = if status == 429 || status == 503 {
        response
            .headers()
            .get("retry-after")
            .and_then(|value| value.to_str().ok())
            .and_then(|text| text.trim().parse::<u64>().ok())
            .map(Duration::from_secs)
    } else {
        None
    };
    // Drain (a bounded part of) the answer so the connection returns to the pool.
    let mut sink = Vec::new();
    let drained = response.body_mut().as_reader().take(MAX_ANSWER_BYTES).read_to_end(&mut sink);
    let error = match (status, drained) {
        (200..=299, Ok(_)) => None,
        (200..=299, Err(error)) => Some(format!("answer body unreadable: {error}")),
        (300..=399, _) => Some(format!("HTTP {status}: redirects are not followed")),
        _ => Some(format!("HTTP {status}")),
    };
    Answer { status: Some(status), error, retry_after, elapsed: started.elapsed() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_retry_schedule_doubles_with_jitter_and_a_cap() {
        // n-th retry: delay × 2^(n-1) within ±20%, never above the cap.
        let policy = RetryPolicy {
            retry_attempts: 10,
            retry_delay: Duration::from_secs(5),
            max_retry_delay: Duration::from_secs(7200),
        };
        assert_eq!(policy.delay(1, 0.5), Duration::from_secs(5));
        assert_eq!(policy.delay(3, 0.5), Duration::from_secs(20));
        assert_eq!(policy.delay(1, 0.0), Duration::from_secs(4));
        assert_eq!(policy.delay(1, 1.0), Duration::from_secs(6));
        assert_eq!(policy.delay(30, 0.5), Duration::from_secs(7200));
        for _ in 0..100 {
            let unit = random_unit();
            assert!((0.0..1.0).contains(&unit));
            let delay = policy.delay(2, unit);
            assert!(delay >= Duration::from_secs(8) && delay <= Duration::from_secs(12), "{delay:?}");
        }
    }
}

//! Per-sandbox rate limits over a sliding minute: requests counted when admitted,
//! tokens when an answer reports its usage.
//!
//! Only what a limit needs is kept: without `requests_per_minute` no request is
//! recorded, without `tokens_per_minute` no token count (a limit set by a reload counts
//! from then on). The requests kept are at most the limit; token counts of one second
//! share an entry, so at most about sixty are kept whatever the traffic.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

const WINDOW: Duration = Duration::from_secs(60);
/// Token counts this close together share one entry.
const TOKEN_BUCKET: Duration = Duration::from_secs(1);

#[derive(Debug, Default)]
pub(crate) struct Limits {
    inner: Mutex<Window>,
}

#[derive(Debug, Default)]
struct Window {
    requests: VecDeque<Instant>,
    tokens: VecDeque<(Instant, u64)>,
    token_sum: u64,
}

impl Window {
    fn prune(&mut self, now: Instant) {
        while self
            .requests
            .front()
            .is_some_and(|t| now.duration_since(*t) >= WINDOW)
        {
            self.requests.pop_front();
        }
        while let Some((t, n)) = self.tokens.front().copied() {
            if now.duration_since(t) < WINDOW {
                break;
            }
            self.tokens.pop_front();
            self.token_sum -= n;
        }
    }
}

/// Why a request waits: which limit, and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Exceeded {
    Requests { limit: u32, retry_after: Duration },
    Tokens { limit: u64, retry_after: Duration },
}

impl Limits {
    /// Admit one request now, or say which limit it exceeds and when to retry.
    pub(crate) fn admit(
        &self,
        now: Instant,
        rpm: Option<u32>,
        tpm: Option<u64>,
    ) -> Result<(), Exceeded> {
        let mut w = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        w.prune(now);
        if let Some(limit) = rpm
            && w.requests.len() >= limit as usize
        {
            // The oldest request within the window leaves it first.
            let idx = w.requests.len() - limit as usize;
            let retry_after = w
                .requests
                .get(idx)
                .map(|t| WINDOW.saturating_sub(now.duration_since(*t)))
                .unwrap_or(WINDOW);
            return Err(Exceeded::Requests { limit, retry_after });
        }
        if let Some(limit) = tpm
            && w.token_sum >= limit
        {
            // Wait until enough tokens have left the window to be under the limit.
            let mut sum = w.token_sum;
            let mut retry_after = WINDOW;
            for (t, n) in &w.tokens {
                sum -= n;
                if sum < limit {
                    retry_after = WINDOW.saturating_sub(now.duration_since(*t));
                    break;
                }
            }
            return Err(Exceeded::Tokens { limit, retry_after });
        }
        if rpm.is_some() {
            w.requests.push_back(now);
        }
        Ok(())
    }

    /// Count the `n` tokens of an answer, when a tokens limit (`tpm`) is set. Counts
    /// within [`TOKEN_BUCKET`] of the last entry join it and move its time to `now`: they
    /// leave the window no earlier than their own minute ends.
    pub(crate) fn add_tokens(&self, now: Instant, n: u64, tpm: Option<u64>) {
        if tpm.is_none() {
            return;
        }
        let mut w = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        w.prune(now);
        match w.tokens.back_mut() {
            Some((t, m)) if now.saturating_duration_since(*t) < TOKEN_BUCKET => {
                *t = now;
                *m += n;
            }
            _ => w.tokens.push_back((now, n)),
        }
        w.token_sum += n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_slide_out_of_the_window() {
        let l = Limits::default();
        let t0 = Instant::now();
        for i in 0..3 {
            assert_eq!(l.admit(t0 + Duration::from_secs(i), Some(3), None), Ok(()));
        }
        assert_eq!(
            l.admit(t0 + Duration::from_secs(10), Some(3), None),
            Err(Exceeded::Requests {
                limit: 3,
                retry_after: Duration::from_secs(50)
            })
        );
        assert_eq!(l.admit(t0 + Duration::from_secs(60), Some(3), None), Ok(()));
    }

    #[test]
    fn tokens_count_until_they_leave_the_window() {
        let l = Limits::default();
        let t0 = Instant::now();
        assert_eq!(l.admit(t0, None, Some(100)), Ok(()));
        l.add_tokens(t0, 60, Some(100));
        l.add_tokens(t0 + Duration::from_secs(20), 50, Some(100));
        assert_eq!(
            l.admit(t0 + Duration::from_secs(30), None, Some(100)),
            Err(Exceeded::Tokens {
                limit: 100,
                retry_after: Duration::from_secs(30)
            })
        );
        assert_eq!(
            l.admit(t0 + Duration::from_secs(60), None, Some(100)),
            Ok(())
        );
    }

    #[test]
    fn nothing_is_kept_without_a_limit() {
        let l = Limits::default();
        let t0 = Instant::now();
        for i in 0..10_000u64 {
            let now = t0 + Duration::from_micros(i * 100);
            assert_eq!(l.admit(now, None, None), Ok(()));
            l.add_tokens(now, 322, None);
        }
        let w = l.inner.lock().unwrap();
        assert_eq!((w.requests.len(), w.tokens.len(), w.token_sum), (0, 0, 0));
    }

    #[test]
    fn token_counts_of_one_second_share_an_entry_stamped_with_the_last() {
        let l = Limits::default();
        let t0 = Instant::now();
        for i in 0..1_000u64 {
            l.add_tokens(t0 + Duration::from_micros(i * 900), 10, Some(5_000));
        }
        {
            let w = l.inner.lock().unwrap();
            assert_eq!(w.tokens.len(), 1);
            assert_eq!(w.token_sum, 10_000);
        }
        // The entry is stamped 0.8991 s after t0: over the limit until a minute after that.
        let last = t0 + Duration::from_micros(999 * 900);
        assert_eq!(
            l.admit(t0 + Duration::from_secs(60), None, Some(5_000)),
            Err(Exceeded::Tokens {
                limit: 5_000,
                retry_after: WINDOW - (t0 + Duration::from_secs(60) - last)
            })
        );
        assert_eq!(l.admit(last + WINDOW, None, Some(5_000)), Ok(()));
        let w = l.inner.lock().unwrap();
        assert_eq!((w.tokens.len(), w.token_sum), (0, 0));
    }
}

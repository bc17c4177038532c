//! A streaming reader of chunked framing: it does not decode, it only finds where a
//! chunked body ends, so the proxy forwards exactly one message's bytes verbatim and
//! nothing a client appends after it (a second, unchecked request) reaches the origin.

use crate::head::Refusal;

const MAX_LINE: usize = 4096;
const MAX_TRAILER_LINES: usize = 64;

#[derive(Debug, Clone, Default)]
pub struct ChunkedFramer {
    state: State,
    line: Vec<u8>,
    trailer_lines: usize,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum State {
    #[default]
    Size,
    Data(u64),
    DataCr,
    DataLf,
    Trailer,
    Done,
}

impl ChunkedFramer {
    pub fn new() -> ChunkedFramer {
        ChunkedFramer::default()
    }

    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// How many leading bytes of `input` belong to the body. Less than `input.len()` only
    /// when the body ended inside `input`.
    pub fn feed(&mut self, input: &[u8]) -> Result<usize, Refusal> {
        let bad = |what: &str| Refusal::new(400, format!("malformed chunked body: {what}"));
        let mut i = 0;
        while i < input.len() {
            match self.state {
                State::Done => return Ok(i),
                State::Data(n) => {
                    let take = (n.min((input.len() - i) as u64)) as usize;
                    i += take;
                    let left = n - take as u64;
                    self.state = if left == 0 {
                        State::DataCr
                    } else {
                        State::Data(left)
                    };
                }
                State::DataCr => {
                    if input[i] != b'\r' {
                        return Err(bad("missing CRLF after chunk data"));
                    }
                    i += 1;
                    self.state = State::DataLf;
                }
                State::DataLf => {
                    if input[i] != b'\n' {
                        return Err(bad("missing CRLF after chunk data"));
                    }
                    i += 1;
                    self.state = State::Size;
                }
                State::Size | State::Trailer => {
                    let b = input[i];
                    i += 1;
                    if b != b'\n' {
                        if self.line.len() >= MAX_LINE {
                            return Err(bad("line too long"));
                        }
                        self.line.push(b);
                        continue;
                    }
                    let Some(line) = self.line.strip_suffix(b"\r") else {
                        return Err(bad("bare LF"));
                    };
                    if self.state == State::Size {
                        let size = parse_size(line).ok_or_else(|| bad("invalid chunk size"))?;
                        self.state = if size == 0 {
                            State::Trailer
                        } else {
                            State::Data(size)
                        };
                    } else if line.is_empty() {
                        self.state = State::Done;
                    } else {
                        self.trailer_lines += 1;
                        if self.trailer_lines > MAX_TRAILER_LINES {
                            return Err(bad("too many trailer lines"));
                        }
                    }
                    self.line.clear();
                }
            }
        }
        Ok(i)
    }
}

fn parse_size(line: &[u8]) -> Option<u64> {
    let end = line.iter().position(|b| *b == b';').unwrap_or(line.len());
    let digits = line[..end].trim_ascii_end();
    if digits.is_empty() || digits.len() > 15 || !digits.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    u64::from_str_radix(std::str::from_utf8(digits).ok()?, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_end_byte_by_byte_and_at_once() {
        let body = b"4\r\nwiki\r\n5;x=y\r\npedia\r\n0\r\nT: v\r\n\r\nGET /next HTTP/1.1\r\n";
        let end = body.len() - "GET /next HTTP/1.1\r\n".len();
        let mut f = ChunkedFramer::new();
        assert_eq!(f.feed(body).unwrap(), end);
        assert!(f.is_done());
        let mut f = ChunkedFramer::new();
        let mut total = 0;
        for b in body.iter() {
            total += f.feed(std::slice::from_ref(b)).unwrap();
            if f.is_done() {
                break;
            }
        }
        assert_eq!(total, end);
    }

    #[test]
    fn refuses_malformed() {
        assert!(ChunkedFramer::new().feed(b"zz\r\n").is_err());
        assert!(ChunkedFramer::new().feed(b"4\nwiki").is_err());
        assert!(ChunkedFramer::new().feed(b"2\r\nabX").is_err());
        assert!(ChunkedFramer::new().feed(b"ffffffffffffffff\r\n").is_err());
    }
}

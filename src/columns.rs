//! Text columns written straight into the output buffer: text and padding copied as slices, numbers and
//! addresses formatted on the stack. core::fmt's width padding went through the io::Write adapter one
//! character at a time and the tracer's bracketed addresses allocated a String per event; together they were
//! most of tcpkit's own CPU per event (perf on the reader at 80,000 events/s).
use std::fmt;
use std::io::{self, Write};
use std::net::IpAddr;

/// Text of at most N bytes, built on the stack.
pub struct StackText<const N: usize> {
    buf: [u8; N],
    len: usize,
}

impl<const N: usize> StackText<N> {
    pub fn new() -> Self {
        StackText { buf: [0; N], len: 0 }
    }

    pub fn as_str(&self) -> &str {
        // Only whole &str pieces are ever appended (see write_str), so this is valid UTF-8.
        std::str::from_utf8(&self.buf[..self.len]).unwrap_or("")
    }
}

impl<const N: usize> fmt::Write for StackText<N> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let end = self.len + s.len();
        if end > N {
            return Err(fmt::Error);
        }
        self.buf[self.len..end].copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

/// An unsigned integer in decimal.
pub fn uint(mut n: u64) -> StackText<20> {
    let mut digits = [0u8; 20];
    let mut start = digits.len();
    loop {
        start -= 1;
        digits[start] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    let mut text = StackText::new();
    let len = digits.len() - start;
    text.buf[..len].copy_from_slice(&digits[start..]);
    text.len = len;
    text
}

/// An address as text; IPv6 in brackets when `brackets` (tcptracer's way), IPv4-mapped ones included.
pub fn ip(addr: IpAddr, brackets: bool) -> StackText<48> {
    let mut text = StackText::new();
    // The longest IPv6 text is 39 bytes (eight groups of four), 41 with brackets.
    let _ = match addr {
        IpAddr::V6(a) if brackets => fmt::write(&mut text, format_args!("[{a}]")),
        _ => fmt::write(&mut text, format_args!("{addr}")),
    };
    text
}

/// `text` left-aligned in `width` columns, as `{:<width}` prints it: longer text is written whole.
pub fn left(w: &mut impl Write, text: &str, width: usize) -> io::Result<()> {
    w.write_all(text.as_bytes())?;
    spaces(w, width.saturating_sub(chars(text)))
}

/// `text` cut to `width` characters and left-aligned in them, as `{:<width.width}` prints it.
pub fn left_cut(w: &mut impl Write, text: &str, width: usize) -> io::Result<()> {
    let cut = match text.char_indices().nth(width) {
        Some((end, _)) => &text[..end],
        None => text,
    };
    left(w, cut, width)
}

/// One line of columns separated by a space, ended by a newline; the first write error is kept and returned
/// by `end`, so a row reads like the format string it replaces.
pub struct Row<'a, W: Write> {
    w: &'a mut W,
    status: io::Result<()>,
    started: bool,
}

impl<'a, W: Write> Row<'a, W> {
    pub fn new(w: &'a mut W) -> Self {
        Row { w, status: Ok(()), started: false }
    }

    /// `{:<width}`
    pub fn left(self, text: &str, width: usize) -> Self {
        self.column(|w| left(w, text, width))
    }

    /// `{:<width.width}`
    pub fn cut(self, text: &str, width: usize) -> Self {
        self.column(|w| left_cut(w, text, width))
    }

    fn column(mut self, write: impl FnOnce(&mut W) -> io::Result<()>) -> Self {
        if self.status.is_ok() {
            let separator = if self.started { self.w.write_all(b" ") } else { Ok(()) };
            self.status = separator.and_then(|()| write(self.w));
            self.started = true;
        }
        self
    }

    pub fn end(self) -> io::Result<()> {
        self.status?;
        self.w.write_all(b"\n")
    }
}

fn chars(text: &str) -> usize {
    if text.is_ascii() {
        text.len()
    } else {
        text.chars().count()
    }
}

fn spaces(w: &mut impl Write, mut n: usize) -> io::Result<()> {
    const SPACES: [u8; 32] = [b' '; 32];
    while n > 0 {
        let chunk = n.min(SPACES.len());
        w.write_all(&SPACES[..chunk])?;
        n -= chunk;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn render(f: impl FnOnce(&mut Vec<u8>) -> io::Result<()>) -> String {
        let mut out = Vec::new();
        f(&mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn pads_and_cuts_as_core_fmt_does() {
        for text in ["", "sshd", "a-long-server-name", "héllo-wörld-ünïcode", "exactly12chr"] {
            assert_eq!(render(|w| left(w, text, 12)), format!("{text:<12}"));
            assert_eq!(render(|w| left_cut(w, text, 12)), format!("{text:<12.12}"));
        }
    }

    #[test]
    fn numbers_and_addresses_match_display() {
        for n in [0, 7, 10, 65535, 4026531833, u64::MAX] {
            assert_eq!(uint(n).as_str(), n.to_string());
        }
        let mapped = Ipv4Addr::LOCALHOST.to_ipv6_mapped();
        let longest = Ipv6Addr::new(0xffff, 0xffff, 0xffff, 0xffff, 0xffff, 0xffff, 0xffff, 0xffff);
        for addr in [IpAddr::V4(Ipv4Addr::new(192, 168, 100, 200)), IpAddr::V6(mapped), IpAddr::V6(longest)] {
            assert_eq!(ip(addr, false).as_str(), addr.to_string());
        }
        assert_eq!(ip(IpAddr::V6(Ipv6Addr::LOCALHOST), true).as_str(), "[::1]");
        assert_eq!(ip(IpAddr::V6(longest), true).as_str(), format!("[{longest}]"));
        assert_eq!(ip(IpAddr::V4(Ipv4Addr::LOCALHOST), true).as_str(), "127.0.0.1");
    }
}

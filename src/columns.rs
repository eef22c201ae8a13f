//! Text columns written straight into the output buffer: text and padding copied as slices, numbers and
//! addresses formatted on the stack. core::fmt's width padding went through the io::Write adapter one
//! character at a time and the tracer's bracketed addresses allocated a String per event; together they were
//! most of tcpkit's own CPU per event (perf on the reader at 80,000 events/s).
use std::fmt;
use std::io::{self, Write};
use std::net::{IpAddr, Ipv6Addr};

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
        // SAFETY: only whole &str pieces (write_str) and ASCII bytes (push) are ever appended, so the
        // bytes are valid UTF-8; checking them again cost 5% of the reader's time per event (perf).
        unsafe { std::str::from_utf8_unchecked(&self.buf[..self.len]) }
    }

    /// Appends ASCII bytes; the caller knows they fit (the sizes here are the longest texts).
    fn push(&mut self, ascii: &[u8]) {
        debug_assert!(ascii.is_ascii());
        self.buf[self.len..self.len + ascii.len()].copy_from_slice(ascii);
        self.len += ascii.len();
    }

    /// An IPv4 address in dotted decimal.
    fn push_ipv4(&mut self, octets: [u8; 4]) {
        for (i, octet) in octets.into_iter().enumerate() {
            if i > 0 {
                self.push(b".");
            }
            let digits = [b'0' + octet / 100, b'0' + octet / 10 % 10, b'0' + octet % 10];
            let skip = usize::from(octet < 100) + usize::from(octet < 10);
            self.push(&digits[skip..]);
        }
    }

    /// 16-bit groups in lower-case hex without leading zeros, separated by colons.
    fn push_groups(&mut self, groups: &[u16]) {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        for (i, &group) in groups.iter().enumerate() {
            if i > 0 {
                self.push(b":");
            }
            let digits = [12, 8, 4, 0].map(|shift| HEX[usize::from(group >> shift & 0xf)]);
            let skip = (group.leading_zeros() as usize / 4).min(3);
            self.push(&digits[skip..]);
        }
    }

    /// An IPv6 address as RFC 5952 (and Rust's Display) writes it: the first longest run of two or more
    /// zero groups as `::`, an IPv4-mapped address as `::ffff:` and dotted decimal.
    fn push_ipv6(&mut self, addr: Ipv6Addr) {
        if let Some(v4) = addr.to_ipv4_mapped() {
            self.push(b"::ffff:");
            return self.push_ipv4(v4.octets());
        }
        let groups = addr.segments();
        let (mut best, mut run) = ((0, 0), (0, 0)); // (start, length) of zero runs
        for (i, &group) in groups.iter().enumerate() {
            if group != 0 {
                run = (i + 1, 0);
                continue;
            }
            run.1 += 1;
            if run.1 > best.1 {
                best = run;
            }
        }
        if best.1 < 2 {
            return self.push_groups(&groups);
        }
        self.push_groups(&groups[..best.0]);
        self.push(b"::");
        self.push_groups(&groups[best.0 + best.1..]);
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

/// "00", "01", … "99": two digits per division.
const DIGIT_PAIRS: [u8; 200] = {
    let mut pairs = [0u8; 200];
    let mut i = 0;
    while i < 100 {
        pairs[2 * i] = b'0' + (i / 10) as u8;
        pairs[2 * i + 1] = b'0' + (i % 10) as u8;
        i += 1;
    }
    pairs
};

/// An unsigned integer in decimal.
pub fn uint(mut n: u64) -> StackText<20> {
    let mut text = StackText::new();
    let mut start = text.buf.len();
    while n >= 100 {
        let pair = 2 * (n % 100) as usize;
        n /= 100;
        start -= 2;
        text.buf[start..start + 2].copy_from_slice(&DIGIT_PAIRS[pair..pair + 2]);
    }
    if n >= 10 {
        start -= 2;
        text.buf[start..start + 2].copy_from_slice(&DIGIT_PAIRS[2 * n as usize..2 * n as usize + 2]);
    } else {
        start -= 1;
        text.buf[start] = b'0' + n as u8;
    }
    text.buf.copy_within(start.., 0);
    text.len = text.buf.len() - start;
    text
}

/// The last `width` decimal digits of `n`, zero-padded (`width` at most 19).
pub fn zero_padded(n: u64, width: u32) -> StackText<20> {
    let mut text = uint(n % 10u64.pow(width) + 10u64.pow(width)); // a leading 1, then the digits
    text.buf.copy_within(1..text.len, 0);
    text.len -= 1;
    text
}

/// `whole.fff`: a number with three decimals, `fraction` in thousandths (below 1000).
pub fn thousandths(whole: u64, fraction: u64) -> StackText<32> {
    let mut text = StackText::new();
    text.push(uint(whole).as_str().as_bytes());
    text.push(b".");
    text.push(zero_padded(fraction, 3).as_str().as_bytes());
    text
}

/// Written by hand: core::fmt's Display of an address (a pad_integral per octet) was a quarter of the
/// reader's time per event (perf).
pub fn ip(addr: IpAddr, brackets: bool) -> StackText<48> {
    let mut text = StackText::new();
    // The longest IPv6 text is 39 bytes (eight groups of four), 41 with brackets.
    match addr {
        IpAddr::V4(a) => text.push_ipv4(a.octets()),
        IpAddr::V6(a) if brackets => {
            text.push(b"[");
            text.push_ipv6(a);
            text.push(b"]");
        }
        IpAddr::V6(a) => text.push_ipv6(a),
    }
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
        for n in [0, 7, 9, 10, 99, 100, 101, 65535, 4026531833, 10_000_000_000_000_000_000, u64::MAX] {
            assert_eq!(uint(n).as_str(), n.to_string());
            assert_eq!(thousandths(n, n % 1000).as_str(), format!("{n}.{:03}", n % 1000));
            assert_eq!(zero_padded(n, 9).as_str(), format!("{:09}", n % 1_000_000_000));
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

    #[test]
    fn addresses_are_written_as_display_writes_them() {
        let mut addrs: Vec<IpAddr> = [
            "0.0.0.0",
            "9.10.99.100",
            "255.255.255.255",
            "::",
            "::1",
            "1::",
            "1::1",
            "1:0:1::1",
            "1::1:0:0:1",
            "0:1::",
            "::ffff:0.0.0.0",
            "::ffff:1:2",
            "::1.2.3.4",
            "fe80::1:2:3:4",
            "2001:db8:0:0:1:0:0:1",
            "2001:db8::a:b:c:d:e",
            "0:0:1:0:0:0:1:0",
        ]
        .iter()
        .map(|a| a.parse().unwrap())
        .collect();
        // Every pattern of zero and non-zero groups (with values of 1 to 4 hex digits), and every octet.
        for zeros in 0..=255u16 {
            let groups: [u16; 8] =
                std::array::from_fn(|i| if zeros >> i & 1 == 1 { 0 } else { [0xf, 0xab, 0x123, 0xfedc][i % 4] });
            addrs.push(IpAddr::V6(Ipv6Addr::from(groups)));
        }
        addrs.extend((0..=255u8).map(|o| IpAddr::V4(Ipv4Addr::new(o, 255 - o, o / 2, 7))));
        for addr in addrs {
            assert_eq!(ip(addr, false).as_str(), addr.to_string(), "{addr:?}");
        }
    }
}

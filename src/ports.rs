//! A set of TCP ports, parsed from "80,443,8000-8080", kept as the bitmap the BPF programs test.
use std::str::FromStr;

pub const BITMAP_WORDS: usize = 65536 / 64;

#[derive(Clone, PartialEq, Eq)]
pub struct PortSet {
    bits: Box<[u64; BITMAP_WORDS]>,
}

impl PortSet {
    pub fn contains(&self, port: u16) -> bool {
        self.bits[usize::from(port / 64)] & (1 << (port % 64)) != 0
    }

    pub fn bitmap(&self) -> &[u64; BITMAP_WORDS] {
        &self.bits
    }

    fn insert(&mut self, port: u16) {
        self.bits[usize::from(port / 64)] |= 1 << (port % 64);
    }
}

impl std::fmt::Debug for PortSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ports: Vec<u16> = (1..=u16::MAX).filter(|p| self.contains(*p)).collect();
        write!(f, "PortSet{ports:?}")
    }
}

fn parse_port(s: &str) -> Result<u16, String> {
    let s = s.trim();
    if s.is_empty() {
        return Err("empty port in list".into());
    }
    match s.parse::<u32>() {
        Ok(p) if (1..=65535).contains(&p) => Ok(p as u16),
        Ok(p) => Err(format!("port {p} is out of range 1-65535")),
        Err(_) => Err(format!("'{s}' is not a port number")),
    }
}

impl FromStr for PortSet {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let mut set = PortSet { bits: Box::new([0; BITMAP_WORDS]) };
        for item in s.split(',') {
            match item.split_once('-') {
                Some((lo, hi)) => {
                    let (lo, hi) = (parse_port(lo)?, parse_port(hi)?);
                    if lo > hi {
                        return Err(format!("port range {lo}-{hi} is backwards"));
                    }
                    (lo..=hi).for_each(|p| set.insert(p));
                }
                None => set.insert(parse_port(item)?),
            }
        }
        Ok(set)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lists_and_ranges() {
        let set: PortSet = "80,443,8000-8002".parse().unwrap();
        for p in [80, 443, 8000, 8001, 8002] {
            assert!(set.contains(p), "{p}");
        }
        for p in [1, 79, 81, 7999, 8003, 65535] {
            assert!(!set.contains(p), "{p}");
        }
    }

    #[test]
    fn accepts_the_extremes() {
        let set: PortSet = "1,65535".parse().unwrap();
        assert!(set.contains(1) && set.contains(65535));
    }

    #[test]
    fn rejects_bad_ports() {
        for bad in ["", "0", "65536", "abc", "80,", ",80", "80,,81", "9-3", "-5", "1-", "80 81"] {
            assert!(bad.parse::<PortSet>().is_err(), "{bad:?} should be rejected");
        }
    }
}

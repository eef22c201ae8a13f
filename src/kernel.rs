//! Small wrappers around libbpf that every subcommand uses.
use libbpf_rs::PrintLevel;

/// libbpf's own messages go to stderr and only with --debug: stdout carries data, and a backend that
/// fails during the automatic choice is expected, not worth a page of verifier log.
pub fn set_libbpf_log(debug: bool) {
    if debug {
        libbpf_rs::set_print(Some((PrintLevel::Debug, print_to_stderr)));
    } else {
        libbpf_rs::set_print(None);
    }
}

fn print_to_stderr(_level: PrintLevel, msg: String) {
    eprint!("libbpf: {msg}");
}

/// Reads a counter that BPF programs update in place, through the skeleton's mmap of .bss.
pub fn read_counter(counter: &u64) -> u64 {
    // SAFETY: the reference points into a live mmap; the kernel changes it behind Rust's back, hence volatile.
    unsafe { std::ptr::read_volatile(counter) }
}

/// As read_counter, for a signed value (an errno the programs keep).
pub fn read_signed(value: &i64) -> i64 {
    // SAFETY: as read_counter's.
    unsafe { std::ptr::read_volatile(value) }
}

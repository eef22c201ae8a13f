//! The generated BPF skeletons, one per subcommand.
#![allow(clippy::all, unused_imports, dead_code, non_camel_case_types, non_upper_case_globals)]

pub mod accept {
    include!(concat!(env!("OUT_DIR"), "/accept.skel.rs"));
}

crate::impl_filter_rodata!(accept::types::rodata);

//! The generated BPF skeletons, one per subcommand, and the glue that lets `session` drive any of them.
#![allow(clippy::all, unused_imports, dead_code, non_camel_case_types, non_upper_case_globals)]

pub mod accept {
    include!(concat!(env!("OUT_DIR"), "/accept.skel.rs"));
}

pub mod tracer {
    include!(concat!(env!("OUT_DIR"), "/tracer.skel.rs"));
}

pub mod metrics {
    include!(concat!(env!("OUT_DIR"), "/metrics.skel.rs"));
}

/// Implements `session::Tool` and `filter::FilterRodata` for a skeleton module; the generated names
/// differ only by the object's name.
/// `$features` writes the subcommand's own rodata switches for `session::Features`; `$dropped` finds the
/// .bss count of series the kernel had no room for, in the objects that count series (metrics).
macro_rules! tool {
    ($module:ident, $builder:ident, $open:ident, $loaded:ident, $features:expr) => {
        tool!($module, $builder, $open, $loaded, $features, |_| None);
    };
    ($module:ident, $builder:ident, $open:ident, $loaded:ident, $features:expr, $dropped:expr) => {
        crate::impl_filter_rodata!($module::types::rodata);

        impl crate::session::Tool for $module::$builder {
            fn rodata<'a, 'obj>(open: &'a mut $module::$open<'obj>) -> &'a mut dyn crate::filter::FilterRodata {
                open.maps.rodata_data.as_deref_mut().expect("every tcpkit object has rodata")
            }

            fn set_features<'obj>(open: &mut $module::$open<'obj>, features: crate::session::Features) {
                let rodata = open.maps.rodata_data.as_deref_mut().expect("every tcpkit object has rodata");
                let write: fn(&mut $module::types::rodata, crate::session::Features) = $features;
                write(rodata, features);
            }

            fn losses<'a, 'obj>(loaded: &'a $module::$loaded<'obj>) -> crate::session::LossCounters<'a> {
                let bss = loaded.maps.bss_data.as_deref().expect("every tcpkit object has a .bss");
                let dropped: fn(&$module::types::bss) -> Option<&u64> = $dropped;
                crate::session::LossCounters {
                    events: &bss.lost_events,
                    unremembered: &bss.unremembered,
                    unremembered_error: &bss.unremembered_error,
                    cgroups: &bss.lost_cgroups,
                    series_dropped: dropped(bss),
                }
            }
        }
    };
}

tool!(accept, AcceptSkelBuilder, OpenAcceptSkel, AcceptSkel, |rodata, features| {
    rodata.stats = features.stats;
});
tool!(tracer, TracerSkelBuilder, OpenTracerSkel, TracerSkel, |rodata, features| {
    rodata.report_failures = features.failed;
    rodata.lifespan = features.lifespan;
    rodata.stats = features.stats;
});
tool!(
    metrics,
    MetricsSkelBuilder,
    OpenMetricsSkel,
    MetricsSkel,
    |rodata, _| {
        // Everything a family needs: failures, how connections end, handshakes and queue waits.
        rodata.report_failures = true;
        rodata.lifespan = true;
        rodata.stats = true;
        rodata.hist_bounds = crate::families::HISTOGRAM_BOUNDS_NS;
    },
    |bss| Some(&bss.series_dropped)
);

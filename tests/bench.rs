//! `vigil bench` end to end: with `--workload nexmark`, generated Nexmark events go through
//! each query's aggregation from examples/nexmark/node.toml (none dead-lettered, which the
//! bench itself refuses), measured in two rounds, and the figures come out as exactly one
//! JSON object; with `--variant`, a second pipeline with other settings runs beside the
//! first.
mod common;

#[test]
fn nexmark_queries_run_on_generated_events() {
    let out = common::vigil_ok(&["bench", "--workload", "nexmark", "--records", "20000", "--paced-fraction", "0.05", "--rounds", "2", "--json"]);
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("not one JSON object ({e}):\n{out}"));
    assert_eq!(v["workload"], "nexmark", "{v}");
    let allocator = if cfg!(all(target_os = "linux", target_env = "gnu")) { "jemalloc" } else { "system" };
    assert_eq!(v["machine"]["allocator"], allocator, "ratios depend on the allocator, so the report names it: {v}");
    assert_eq!((&v["records"], &v["rounds"]), (&serde_json::json!(20000), &serde_json::json!(2)), "{v}");
    let results = v["results"].as_array().cloned().unwrap_or_default();
    let modes: Vec<&str> = results.iter().filter_map(|r| r["mode"].as_str()).collect();
    assert_eq!(modes, ["raw", "q1", "q5", "q11"], "the default Nexmark modes:\n{v}");
    for r in &results {
        let mode = r["mode"].as_str().unwrap_or_default();
        assert!(r["records_per_sec"].as_f64().is_some_and(|x| x > 0.0), "{mode}: {r}");
        assert!(r["records_per_cpu_sec"].as_f64().is_some_and(|x| x > 0.0), "{mode}: {r}");
        let runs: Vec<f64> = r["records_per_sec_runs"].as_array().map(|a| a.iter().filter_map(|x| x.as_f64()).collect()).unwrap_or_default();
        assert_eq!(runs.len(), 2, "{mode}: one figure per round: {r}");
        let median = (runs[0] + runs[1]) / 2.0;
        assert!(r["records_per_sec"].as_f64().is_some_and(|x| (x - median).abs() <= 1e-6 * median), "{mode}: the median of the rounds: {r}");
        if mode != "raw" {
            assert!(r["ratio_to_raw"].as_f64().is_some_and(|x| x > 0.0), "{mode}: {r}");
            assert_eq!(r["dead_lettered"], 0, "{mode}: every generated event is valid and on time: {r}");
            assert!(r["p99_ms"].as_i64().is_some_and(|p| p >= r["p50_ms"].as_i64().unwrap_or(i64::MAX)), "{mode}: {r}");
        }
    }
}

/// `--variant` adds `pipeline_variant`, the pipeline with the settings given: here a rate
/// limit, which shows in its throughput (so a setting that did not apply fails the test).
/// A path that names nothing fails before anything runs, naming it.
#[test]
fn a_variant_runs_the_pipeline_with_other_settings_beside_it() {
    let args = ["bench", "--records", "20000", "--modes", "raw,pipeline", "--paced-fraction", "0.05", "--json"];
    let out = common::vigil_ok(&[&args[..], &["--variant", "pipeline.max_records_per_sec=4000"]].concat());
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("not one JSON object ({e}):\n{out}"));
    assert_eq!(v["variant"], serde_json::json!({"pipeline.max_records_per_sec": "4000"}), "{v}");
    let rate = |mode: &str| v["results"].as_array().and_then(|rs| rs.iter().find(|r| r["mode"] == mode)).and_then(|r| r["records_per_sec"].as_f64());
    let (base, variant) = (rate("pipeline").unwrap_or(0.0), rate("pipeline_variant").unwrap_or(0.0));
    // 4,000 records/s after a first batch (2,000 records) read at once: ~4,400 records/s.
    assert!(variant > 0.0 && variant <= 6_000.0, "the variant reads at most ~4,000 records/s: {variant}\n{v}");
    assert!(base > 2.0 * variant, "the pipeline itself is not limited: {base} against {variant}\n{v}");

    let bad = std::process::Command::new(common::BIN).args([&args[..], &["--variant", "pipeline.no_such_setting=1"]].concat()).output().expect("run vigil");
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(!bad.status.success() && err.contains("pipeline.no_such_setting"), "{err}");
}

//! `vigil bench --workload nexmark` end to end: generated Nexmark events go through each
//! query's aggregation from examples/nexmark/node.toml (none dead-lettered, which the bench
//! itself refuses), and the figures come out as exactly one JSON object.
mod common;

#[test]
fn nexmark_queries_run_on_generated_events() {
    let out = common::vigil_ok(&["bench", "--workload", "nexmark", "--records", "20000", "--paced-fraction", "0.05", "--json"]);
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("not one JSON object ({e}):\n{out}"));
    assert_eq!(v["workload"], "nexmark", "{v}");
    assert_eq!(v["records"], 20000, "{v}");
    let results = v["results"].as_array().cloned().unwrap_or_default();
    let modes: Vec<&str> = results.iter().filter_map(|r| r["mode"].as_str()).collect();
    assert_eq!(modes, ["raw", "q1", "q5", "q11"], "the default Nexmark modes:\n{v}");
    for r in &results {
        let mode = r["mode"].as_str().unwrap_or_default();
        assert!(r["records_per_sec"].as_f64().is_some_and(|x| x > 0.0), "{mode}: {r}");
        assert!(r["records_per_cpu_sec"].as_f64().is_some_and(|x| x > 0.0), "{mode}: {r}");
        if mode != "raw" {
            assert!(r["ratio_to_raw"].as_f64().is_some_and(|x| x > 0.0), "{mode}: {r}");
            assert_eq!(r["dead_lettered"], 0, "{mode}: every generated event is valid and on time: {r}");
            assert!(r["p99_ms"].as_i64().is_some_and(|p| p >= r["p50_ms"].as_i64().unwrap_or(i64::MAX)), "{mode}: {r}");
        }
    }
}

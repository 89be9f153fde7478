//! Checks `offer_engine::ope` against Open Bandit Pipeline 0.4.1.
//!
//! `tests/fixtures/ope/cases.json` is produced by
//! `tests/fixtures/ope/generate.py` (pinned versions and install notes in its
//! header). Each case is a list of logged rounds in the generic NDJSON shape
//! that `offer-engine evaluate --log` reads, so the rounds go through the
//! same parser and reduction as the command (`evaluate_cli::round_terms`),
//! then through `ope::evaluate`.
//!
//! Point estimates (IPS, SNIPS, DR) must agree with obp's
//! `estimate_policy_value` to a relative error of 1e-6. obp's intervals are
//! bootstrap resamples, so the analytic intervals are checked against their
//! own numpy reference instead: the standard errors (sample sd of obp's
//! per-round terms for IPS and DR, the delta method for SNIPS) to 1e-6, and
//! `ci = value ± z·se` with z = Φ⁻¹(0.975). The absolute floor 1e-12 is for
//! references that are exactly zero (a tiny case with no reward).

use std::path::Path;

use offer_engine::cli::evaluate::{round_terms, LoggedRound, Target};
use offer_engine::ope::{evaluate, Estimate, EvaluateOptions};
use serde::Deserialize;

const REL_TOL: f64 = 1e-6;
const ABS_FLOOR: f64 = 1e-12;
const Z95: f64 = 1.959_963_984_540_054;

#[derive(Debug, Deserialize)]
struct File {
    versions: serde_json::Value,
    cases: Vec<Case>,
}

#[derive(Debug, Deserialize)]
struct Case {
    name: String,
    rounds: Vec<serde_json::Value>,
    expected: Expected,
}

#[derive(Debug, Deserialize)]
struct Expected {
    ips: f64,
    snips: f64,
    dr: f64,
    ips_se: f64,
    dr_se: f64,
    snips_se: f64,
    ess: f64,
    max_weight: f64,
}

fn close(what: &str, case: &str, got: f64, want: f64) {
    let err = (got - want).abs();
    assert!(
        err <= REL_TOL * want.abs() || err <= ABS_FLOOR,
        "{case}: {what} = {got}, obp/numpy say {want} (error {err:e})"
    );
}

fn check_interval(what: &str, case: &str, e: &Estimate, value: f64, se: f64) {
    close(what, case, e.value, value);
    let got_se = e
        .std_error
        .unwrap_or_else(|| panic!("{case}: {what} has no interval"));
    close(&format!("{what} std error"), case, got_se, se);
    close(
        &format!("{what} ci_low"),
        case,
        e.ci_low.unwrap(),
        e.value - Z95 * got_se,
    );
    close(
        &format!("{what} ci_high"),
        case,
        e.ci_high.unwrap(),
        e.value + Z95 * got_se,
    );
}

fn load() -> File {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/ope/cases.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_json::from_str(&text).expect("fixture parses")
}

#[test]
fn estimators_agree_with_open_bandit_pipeline() {
    let file = load();
    assert_eq!(file.versions["obp"], "0.4.1");
    assert!(file.cases.len() >= 5, "fixture lost its cases");
    for case in &file.cases {
        let terms: Vec<_> = case
            .rounds
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let line = LoggedRound::deserialize(v)
                    .unwrap_or_else(|e| panic!("{} round {i}: {e}", case.name));
                round_terms(&line, &Target::Logged)
                    .unwrap_or_else(|e| panic!("{} round {i}: {e}", case.name))
            })
            .collect();
        let e = evaluate(&terms, &EvaluateOptions::default()).expect("evaluates");
        let x = &case.expected;
        assert_eq!(e.rounds as usize, case.rounds.len());
        check_interval("ips", &case.name, &e.ips, x.ips, x.ips_se);
        check_interval(
            "snips",
            &case.name,
            &e.snips.expect("snips"),
            x.snips,
            x.snips_se,
        );
        check_interval("dr", &case.name, &e.dr, x.dr, x.dr_se);
        close("ess", &case.name, e.effective_sample_size, x.ess);
        close(
            "max weight",
            &case.name,
            e.max_importance_weight,
            x.max_weight,
        );
    }
}

#[test]
fn without_reward_estimates_dr_is_ips_and_says_so() {
    let file = load();
    let mut seen = 0;
    for case in file
        .cases
        .iter()
        .filter(|c| c.name.contains("no_estimates"))
    {
        seen += 1;
        let terms: Vec<_> = case
            .rounds
            .iter()
            .map(|v| round_terms(&LoggedRound::deserialize(v).unwrap(), &Target::Logged).unwrap())
            .collect();
        let e = evaluate(&terms, &EvaluateOptions::default()).unwrap();
        assert_eq!(e.dr.value, e.ips.value, "{}", case.name);
        assert!(e.warnings.iter().any(|w| w.code == "no_reward_estimates"));
    }
    assert!(seen >= 2);
}

/// The documented example files parse and evaluate as the docs say.
#[test]
fn documented_examples_evaluate() {
    use offer_engine::catalog::Catalog;
    use offer_engine::cli::evaluate::{read_rounds, ModelPolicy, RewardUnit};
    use offer_engine::model::ModelFile;
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/ope");
    let open = |name: &str| std::io::BufReader::new(std::fs::File::open(dir.join(name)).unwrap());

    let rounds = read_rounds(open("logged.ndjson"), &Target::Logged).unwrap();
    let e = evaluate(&rounds, &EvaluateOptions::default()).unwrap();
    assert_eq!(e.rounds, 8);
    // Hand check of the first line: w = 0.5 / 0.72, reward 1.
    assert!((rounds[0].weight() - 0.5 / 0.72).abs() < 1e-15);
    assert!(e.warnings.is_empty());

    let greedy = Target::Model(Box::new(
        ModelPolicy::new(
            &ModelFile::default_model(),
            Catalog::default_catalog(),
            None,
            RewardUnit::Value,
        )
        .unwrap(),
    ));
    let rounds = read_rounds(open("logged-context.ndjson"), &greedy).unwrap();
    assert_eq!(rounds.len(), 40);
    // A greedy candidate gives each logged action probability 0 or 1, and
    // the epsilon-greedy log was drawn from the same model's ranking, so most
    // logged actions are the candidate's.
    assert!(rounds
        .iter()
        .all(|r| r.target_prob == 0.0 || r.target_prob == 1.0));
    let agree = rounds.iter().filter(|r| r.target_prob == 1.0).count();
    assert!(agree > 20, "{agree}");
    evaluate(&rounds, &EvaluateOptions::default()).unwrap();
}

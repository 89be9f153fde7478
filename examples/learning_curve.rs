//! Writes the learning curve of the adaptive models from a cold start in the
//! synthetic world: `docs/learning-curve.csv` and `docs/learning-curve.svg`.
//!
//! `cargo run --release --example learning_curve -- [DECISIONS] [EVERY]`

use offer_engine::catalog::Catalog;
use offer_engine::learnsim::{curve_csv, curve_svg, SimConfig, Simulation};

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let n: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(200_000);
    let every: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(5_000);
    let cfg = SimConfig::default();
    let mut sim = Simulation::new(cfg.clone(), Catalog::default_catalog());
    let curve = sim.run(n, every);
    std::fs::create_dir_all("docs")?;
    std::fs::write("docs/learning-curve.csv", curve_csv(&curve))?;
    let title = format!(
        "Adaptive models from a cold start, {:?} exploration, synthetic world seed {}",
        cfg.policy, cfg.seed
    );
    std::fs::write("docs/learning-curve.svg", curve_svg(&curve, &title))?;
    if let Some(last) = curve.last() {
        eprintln!(
            "{} decisions: AUC adaptive {:.4}, offline {:.4}, cumulative regret {:.0} CNY",
            last.decisions, last.auc_adaptive, last.auc_offline, last.cumulative_regret
        );
    }
    Ok(())
}

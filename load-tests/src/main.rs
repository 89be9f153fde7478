//! `offer-engine-load`: see `load-tests/README.md`.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};
use offer_engine_load::traffic::{MemberDist, Mix};
use offer_engine_load::{report, run_population, wait_ready, RunConfig};

#[derive(Debug, Parser)]
#[command(
    name = "offer-engine-load",
    about = "Load generator and performance record for offer-engine (loopback only)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs the whole sequence against one server and writes its JSON record.
    Run(RunArgs),
    /// Waits until the server's /readyz answers 200.
    WaitReady {
        /// Server URL (loopback only).
        #[arg(long)]
        url: String,
        /// Seconds to wait at most.
        #[arg(long, default_value_t = 1800)]
        timeout_secs: u64,
    },
    /// One ad-hoc step (open loop at --rate, or closed loop without it), printed, not written.
    Step {
        /// Server URL (loopback only).
        #[arg(long)]
        url: String,
        /// Members in the server.
        #[arg(long, default_value_t = 100_000)]
        population: u64,
        /// Requests a second (open loop); closed loop when absent.
        #[arg(long)]
        rate: Option<f64>,
        /// Connections.
        #[arg(long, default_value_t = 64)]
        connections: usize,
        /// Seconds.
        #[arg(long, default_value_t = 5.0)]
        secs: f64,
        /// Mix, e.g. offers=1 or healthz=1.
        #[arg(long, default_value = "offers=1")]
        mix: String,
    },
    /// The cluster benchmark: one local-log server against replicas of one
    /// JetStream stream (see load-tests/cluster.sh bench).
    Cluster(ClusterArgs),
    /// Combines population-*.json in DIR into results.json and summary.md.
    Summarize {
        /// Results folder.
        #[arg(long)]
        dir: PathBuf,
        /// The command that reproduces the record (printed in the summary).
        #[arg(long, default_value = "load-tests/run.sh")]
        command: String,
    },
}

#[derive(Debug, clap::Args)]
struct ClusterArgs {
    /// The single server on the local log (baseline), e.g. http://127.0.0.1:18490.
    #[arg(long)]
    local: String,
    /// Its pid (CPU use).
    #[arg(long)]
    local_pid: Option<String>,
    /// The replicas' URLs, comma-separated, in order.
    #[arg(long, value_delimiter = ',')]
    replicas: Vec<String>,
    /// Pids of the cluster's server-side processes (replicas and nats-servers), comma-separated.
    #[arg(long, value_delimiter = ',')]
    cluster_pids: Vec<String>,
    /// Members loaded in every server.
    #[arg(long)]
    population: u64,
    /// Seconds per measured step.
    #[arg(long, default_value_t = 10.0)]
    step_secs: f64,
    /// Rounds of the checkout saturation steps (median reported).
    #[arg(long, default_value_t = 2)]
    rounds: usize,
    /// Connections of the closed-loop steps.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Fixed rate of the checkout latency steps.
    #[arg(long, default_value_t = 200.0)]
    checkout_rate: f64,
    /// Fixed rate of the accept latency steps.
    #[arg(long, default_value_t = 50.0)]
    accept_rate: f64,
    /// Longest wait, in seconds, for other processes to go quiet before each step.
    #[arg(long, default_value_t = 20)]
    quiet_wait_secs: u64,
    /// Seed.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Extra facts, KEY=VALUE, kept in the record.
    #[arg(long = "extra")]
    extra: Vec<String>,
    /// The command that reproduces the record (printed in the summary).
    #[arg(long, default_value = "load-tests/cluster.sh bench")]
    command: String,
    /// Output folder (cluster.json and summary.md).
    #[arg(long)]
    out: PathBuf,
}

fn parse_extra(kvs: &[String]) -> anyhow::Result<serde_json::Value> {
    let mut extra = serde_json::Map::new();
    for kv in kvs {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("--extra {kv:?} is not KEY=VALUE"))?;
        let v = serde_json::from_str(v).unwrap_or_else(|_| serde_json::Value::String(v.into()));
        extra.insert(k.into(), v);
    }
    Ok(serde_json::Value::Object(extra))
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// Server URL (loopback only), e.g. http://127.0.0.1:18480.
    #[arg(long)]
    url: String,
    /// Members loaded in the server: ids M00000001..=M{population}.
    #[arg(long)]
    population: u64,
    /// Member id distribution over the whole population.
    #[arg(long, value_enum, default_value = "uniform")]
    dist: MemberDist,
    /// Connections of the saturation (closed-loop) steps.
    #[arg(long, default_value_t = 64)]
    sat_connections: usize,
    /// Connections of the fixed-rate (open-loop) steps.
    #[arg(long, default_value_t = 64)]
    rate_connections: usize,
    /// Seconds per measured step.
    #[arg(long, default_value_t = 10.0)]
    step_secs: f64,
    /// Alternating saturation rounds (healthz, offers, ...); the median round of each is reported.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Longest wait, in seconds, for other processes to go quiet before each step.
    #[arg(long, default_value_t = 120)]
    quiet_wait_secs: u64,
    /// Warm-up seconds (not reported).
    #[arg(long, default_value_t = 3.0)]
    warmup_secs: f64,
    /// Fixed rate as a fraction of the offers saturation throughput.
    #[arg(long, default_value_t = 0.5)]
    rate_fraction: f64,
    /// Mix of the mixed fixed-rate step (kinds: offers, events, member_events, member_put, healthz).
    #[arg(
        long,
        default_value = "offers=85,events=8,member_events=4,member_put=3"
    )]
    mix: String,
    /// Seed.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Server pid: its CPU use and resident memory are read from /proc.
    #[arg(long)]
    server_pid: Option<String>,
    /// Members NDJSON the server loaded (its size is the raw record bytes).
    #[arg(long)]
    members_file: Option<String>,
    /// Extra facts, KEY=VALUE (numbers kept as numbers), kept in the record.
    #[arg(long = "extra")]
    extra: Vec<String>,
    /// Output JSON file.
    #[arg(long)]
    out: PathBuf,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    match cli.command {
        Command::WaitReady { url, timeout_secs } => rt.block_on(async {
            let t = offer_engine_load::engine::Target::from_url(&url)?;
            wait_ready(&t, Duration::from_secs(timeout_secs)).await
        }),
        Command::Step {
            url,
            population,
            rate,
            connections,
            secs,
            mix,
        } => rt.block_on(async {
            let t = offer_engine_load::engine::Target::from_url(&url)?;
            let traffic = std::sync::Arc::new(offer_engine_load::traffic::Traffic::new(
                population,
                MemberDist::Uniform,
            ));
            let step = offer_engine_load::engine::Step {
                name: "step".into(),
                mode: match rate {
                    Some(r) => offer_engine_load::engine::Mode::Open { rate: r },
                    None => offer_engine_load::engine::Mode::Closed,
                },
                connections,
                duration: Duration::from_secs_f64(secs),
                mix: Mix::parse(&mix).map_err(anyhow::Error::msg)?,
                drain: Duration::from_secs(2),
            };
            let r = offer_engine_load::engine::run_step(&t, traffic, step, None, 7).await?;
            println!("{}", serde_json::to_string_pretty(&r.to_json())?);
            Ok(())
        }),
        Command::Summarize { dir, command } => {
            report::summarize(&dir, &command)?;
            eprintln!(
                "wrote {} and {}",
                dir.join("results.json").display(),
                dir.join("summary.md").display()
            );
            Ok(())
        }
        Command::Cluster(a) => {
            let cfg = offer_engine_load::cluster::ClusterConfig {
                local: a.local,
                local_pid: a.local_pid,
                replicas: a.replicas,
                cluster_pids: a.cluster_pids,
                population: a.population,
                step_secs: a.step_secs,
                rounds: a.rounds,
                connections: a.connections,
                checkout_rate: a.checkout_rate,
                accept_rate: a.accept_rate,
                quiet_wait: Duration::from_secs(a.quiet_wait_secs),
                seed: a.seed,
                extra: parse_extra(&a.extra)?,
            };
            let v = rt.block_on(offer_engine_load::cluster::run_cluster(&cfg))?;
            std::fs::create_dir_all(&a.out)?;
            std::fs::write(
                a.out.join("cluster.json"),
                serde_json::to_string_pretty(&v)? + "\n",
            )?;
            let md = offer_engine_load::cluster::summary_md(&v, &a.command);
            std::fs::write(a.out.join("summary.md"), &md)?;
            eprintln!("wrote {}", a.out.join("cluster.json").display());
            println!("{md}");
            Ok(())
        }
        Command::Run(a) => {
            let mut extra = serde_json::Map::new();
            for kv in &a.extra {
                let (k, v) = kv
                    .split_once('=')
                    .ok_or_else(|| anyhow::anyhow!("--extra {kv:?} is not KEY=VALUE"))?;
                let v =
                    serde_json::from_str(v).unwrap_or_else(|_| serde_json::Value::String(v.into()));
                extra.insert(k.into(), v);
            }
            let cfg = RunConfig {
                url: a.url,
                population: a.population,
                dist: a.dist,
                sat_connections: a.sat_connections,
                rate_connections: a.rate_connections,
                step_secs: a.step_secs,
                warmup_secs: a.warmup_secs,
                rounds: a.rounds,
                quiet_wait: Duration::from_secs(a.quiet_wait_secs),
                rate_fraction: a.rate_fraction,
                mix: Mix::parse(&a.mix).map_err(anyhow::Error::msg)?,
                seed: a.seed,
                server_pid: a.server_pid,
                members_file: a.members_file,
                extra: serde_json::Value::Object(extra),
            };
            let v = rt.block_on(run_population(&cfg))?;
            if let Some(d) = a.out.parent() {
                std::fs::create_dir_all(d)?;
            }
            std::fs::write(&a.out, serde_json::to_string_pretty(&v)? + "\n")?;
            eprintln!("wrote {}", a.out.display());
            Ok(())
        }
    }
}

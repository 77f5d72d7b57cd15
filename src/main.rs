//! The `riskflow` command: `run` (the engine), `gen` (datasets), `produce` (a dataset to
//! Kafka), `recon` (batch reconciliation).

mod allocator;
mod config;
mod kafka_run;
mod produce;
mod recon;
mod run;
mod sample;
mod summary;

use std::path::PathBuf;

use anyhow::Context;
use clap::{ArgAction, Args, Parser, Subcommand, ValueEnum};

use crate::config::Config;

#[derive(Parser)]
#[command(name = "riskflow", version, about = "Real-time risk engine on timely dataflow")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the engine: replay a dataset (the bundled sample by default) and print a summary.
    Run(RunArgs),
    /// Generate a dataset.
    Gen(GenArgs),
    /// Recompute the snapshot tables in batch from the raw inputs and compare.
    Recon(ReconArgs),
    /// Publish a dataset to the Kafka input topics.
    Produce(ProduceArgs),
}

#[derive(Args)]
struct ProduceArgs {
    /// Dataset directory to publish (default: the bundled sample).
    #[arg(long)]
    dataset: Option<PathBuf>,
    /// Bootstrap servers (default: kafka.brokers of the configuration, 127.0.0.1:9092).
    #[arg(long)]
    brokers: Option<String>,
    /// Records per second (default: as fast as the broker takes them).
    #[arg(long)]
    rate: Option<f64>,
    /// TOML configuration file: topic names and producer properties of `[kafka]`.
    #[arg(long)]
    config: Option<PathBuf>,
    /// No progress display.
    #[arg(long, short = 'q')]
    quiet: bool,
}

#[derive(Args)]
struct ReconArgs {
    /// Dataset directory the snapshots were computed from (default: the bundled sample).
    #[arg(long)]
    input: Option<PathBuf>,
    /// Instead of files, read the input topics from the beginning (topic names from --config).
    #[arg(long, conflicts_with = "input")]
    kafka: Option<String>,
    /// Output directory of the run whose snapshots to check.
    #[arg(long, default_value = "out")]
    snapshots: PathBuf,
    /// Largest accepted |snapshot − batch| / max(|snapshot|, |batch|, 1).
    #[arg(long, default_value_t = 1e-9)]
    tolerance: f64,
    /// The run's configuration (base currency, rate, epoch, limits, analytics).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Also write the full comparison as JSON.
    #[arg(long)]
    report: Option<PathBuf>,
    /// Also replay the limits and compare the `breaches` and `actions` tables.
    #[arg(long)]
    limits: bool,
}

#[derive(Args, Default)]
#[command(disable_help_flag = true)]
struct RunArgs {
    /// Dataset directory to replay (default: the bundled sample).
    #[arg(long, conflicts_with = "kafka")]
    replay: Option<PathBuf>,
    /// Read the Kafka input topics from these bootstrap servers instead (HOST:PORT[,…]).
    #[arg(long)]
    kafka: Option<String>,
    /// With --kafka: read each partition up to its high watermark at start, then finish.
    #[arg(long, requires = "kafka")]
    until_caught_up: bool,
    /// Output directory for snapshots and dead letters (default: ./out, or output.dir).
    #[arg(long)]
    out: Option<PathBuf>,
    /// TOML configuration file (see docs/configuration.md).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Worker threads per process.
    #[arg(short = 'w', long)]
    workers: Option<usize>,
    /// Processes in a timely cluster.
    #[arg(short = 'n', long, default_value_t = 1)]
    processes: usize,
    /// This process's index in the cluster.
    #[arg(short = 'p', long, default_value_t = 0)]
    process: usize,
    /// File of host:port lines, one per process (default 127.0.0.1:2101+i).
    #[arg(short = 'h', long)]
    hostfile: Option<PathBuf>,
    /// Also write the summary as JSON to this file.
    #[arg(long)]
    summary_json: Option<PathBuf>,
    /// No progress display.
    #[arg(long, short = 'q')]
    quiet: bool,
    /// Print help.
    #[arg(long, action = ArgAction::Help)]
    help: Option<bool>,
}

#[derive(Clone, Copy, ValueEnum)]
enum PresetArg {
    Sample,
    Day,
    Daily,
}

#[derive(Args)]
struct GenArgs {
    #[arg(long, value_enum, default_value = "sample")]
    preset: PresetArg,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    #[arg(long)]
    out: PathBuf,
    /// Number of accounts (day preset).
    #[arg(long)]
    accounts: Option<usize>,
    /// Number of instruments (day preset).
    #[arg(long)]
    instruments: Option<usize>,
    /// Number of position deltas (day preset; up to 100M).
    #[arg(long)]
    deltas: Option<u64>,
    /// Instead of generating, import daily closes from a CSV of date,instrument,close.
    #[arg(long)]
    from_csv: Option<PathBuf>,
    /// Currency of the instruments of --from-csv.
    #[arg(long, default_value = "USD")]
    currency: String,
}

fn main() -> std::process::ExitCode {
    allocator::configure();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("RISKFLOW_LOG").unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command.unwrap_or(Command::Run(RunArgs::default())) {
        Command::Run(args) => run(args),
        Command::Gen(args) => gen(args),
        Command::Recon(args) => recon(args),
        Command::Produce(args) => produce(args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("riskflow: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(args: RunArgs) -> anyhow::Result<()> {
    let mut config = match &args.config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    if let Some(w) = args.workers {
        config.engine.workers = w;
    }
    if let Some(brokers) = &args.kafka {
        config.kafka.brokers = brokers.clone();
    }
    config.validate()?;
    let kafka = args.kafka.is_some().then_some(kafka_run::KafkaRun { until_caught_up: args.until_caught_up });
    let replay = match (args.replay, &kafka) {
        (Some(dir), _) => dir,
        (None, Some(_)) => PathBuf::new(),
        (None, None) => sample::materialise().context("writing the bundled sample to a temp dir")?,
    };
    let hosts = match &args.hostfile {
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| format!("reading {}", path.display()))?
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect(),
        None => Vec::new(),
    };
    if args.process >= args.processes {
        anyhow::bail!("-p {} is not below -n {}", args.process, args.processes);
    }
    let out = args.out.unwrap_or_else(|| config.output.dir.clone());
    let opts = run::RunOptions {
        config,
        replay,
        out,
        processes: args.processes,
        process: args.process,
        hosts,
        progress: !args.quiet,
        kafka,
    };
    let summary = run::run(opts)?;
    println!("{summary}");
    if let Some(path) = args.summary_json {
        std::fs::write(&path, serde_json::to_vec_pretty(&summary)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

fn produce(args: ProduceArgs) -> anyhow::Result<()> {
    let mut config = match &args.config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    if let Some(brokers) = args.brokers {
        config.kafka.brokers = brokers;
    }
    config.validate()?;
    if args.rate.is_some_and(|r| !(r.is_finite() && r > 0.0)) {
        anyhow::bail!("--rate must be a positive number of records per second");
    }
    let dataset = match args.dataset {
        Some(dir) => dir,
        None => sample::materialise().context("writing the bundled sample to a temp dir")?,
    };
    let report = produce::produce(&produce::ProduceOptions {
        dataset,
        kafka: config.kafka,
        rate: args.rate,
        progress: !args.quiet,
    })?;
    println!("{report}");
    Ok(())
}

fn recon(args: ReconArgs) -> anyhow::Result<()> {
    let config = match &args.config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    let input = match (args.input, &args.kafka) {
        (Some(dir), _) => dir,
        (None, Some(brokers)) => {
            let mut config = config.clone();
            config.kafka.brokers = brokers.clone();
            let dir = std::env::temp_dir().join(format!("riskflow-recon-kafka-{}", std::process::id()));
            let n = kafka_run::dump_inputs(&config, &dir).context("reading the input topics")?;
            eprintln!("read {n} input records from {brokers} into {}", dir.display());
            dir
        }
        (None, None) => sample::materialise().context("writing the bundled sample to a temp dir")?,
    };
    let opts = recon::ReconOptions {
        input,
        snapshots: args.snapshots,
        tolerance: args.tolerance,
        config,
        limits: args.limits,
    };
    let report = recon::recon(&opts)?;
    println!("{report}");
    if let Some(path) = args.report {
        std::fs::write(&path, serde_json::to_vec_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if !report.ok {
        anyhow::bail!("snapshots disagree with the batch recomputation");
    }
    Ok(())
}

fn gen(args: GenArgs) -> anyhow::Result<()> {
    use riskflow_datasets::{generate, GenOptions, Preset};
    if let Some(csv) = &args.from_csv {
        let done = riskflow_datasets::csv::import_closes(csv, &args.out, &args.currency)?;
        println!("imported {} closes of {} instruments to {}", done.closes, done.instruments, args.out.display());
        return Ok(());
    }
    let preset = match args.preset {
        PresetArg::Sample => Preset::Sample,
        PresetArg::Day => Preset::Day,
        PresetArg::Daily => Preset::Daily,
    };
    let mut opts = GenOptions::new(preset, args.seed);
    opts.accounts = args.accounts;
    opts.instruments = args.instruments;
    opts.deltas = args.deltas;
    let started = std::time::Instant::now();
    let tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let mut last = std::time::Instant::now();
    let manifest = generate(&opts, &args.out, &mut |n| {
        if tty && last.elapsed().as_millis() >= 500 {
            last = std::time::Instant::now();
            eprint!("\r  {n} records written   ");
        }
    })?;
    if tty {
        eprintln!();
    }
    println!(
        "wrote {} files to {} in {:.1} s (preset {}, seed {}, generator {})",
        manifest.files.len(),
        args.out.display(),
        started.elapsed().as_secs_f64(),
        manifest.preset,
        manifest.seed,
        manifest.generator_version
    );
    Ok(())
}

//! `posync-merge`: the server's merge alone, in process, on one thread: the P=100 storm's
//! pushes (every phone's first push of its session, saved whole) merged in order by
//! `store::core::merge_push`, each into the document as the previous push left it (kept
//! loaded, as the server's cache does). No HTTP, no SQLite, no other thread: what a change
//! to the merge path saves shows here when the whole storm's spread (±20% for one build on
//! a shared 2-core machine) hides it. Repeated; the minimum is the figure to compare (what
//! the code costs when nothing else runs), the median says how noisy the run was.
//!
//! Prints one JSON object. Bounded: at most 500 posyandu × 8 phones × 100 visits, 50 repeats.

use anyhow::{Result, bail};
use clap::Parser;
use posync_model::doc::{self, DocMeta};
use posync_model::{DeviceId, Heads, PosyanduId};
use posync_proto::{DocPush, Limits};
use posync_store::core::{self, DocWrite, Existing, Rules, StoredForm};
use posync_testkit::{DAY, Generator, posyandu};
use std::time::Instant;

#[derive(Parser, Debug)]
#[command(name = "posync-merge", about = "The server's merge of a storm's pushes, in process, on one thread")]
struct Args {
    #[arg(long, default_value_t = 100)]
    posyandu: usize,
    /// Phones per posyandu.
    #[arg(long, default_value_t = 4)]
    devices: usize,
    /// Visits each phone captured.
    #[arg(long, default_value_t = 15)]
    visits: usize,
    #[arg(long, default_value_t = 9)]
    repeats: usize,
    #[arg(long, default_value_t = 2026)]
    seed: u64,
}

/// One phone's first push of its posyandu's session.
struct Push {
    device: DeviceId,
    push: DocPush,
}

/// Every phone's first push, posyandu by posyandu (a storm's order when phones of one
/// posyandu sync together).
fn pushes(args: &Args) -> Result<Vec<Vec<Push>>> {
    let mut seeded = Generator::new(args.seed);
    let mut out = Vec::with_capacity(args.posyandu);
    for p in 0..args.posyandu {
        let id: PosyanduId = posyandu(&format!("merge-{p:04}"));
        let meta = DocMeta::session(id, DAY);
        let devices: Vec<DeviceId> = (0..args.devices).map(|_| DeviceId::new_random()).collect();
        let genesis = doc::genesis(&meta, devices[0].actor())?;
        let mut phones = Vec::with_capacity(args.devices);
        for (i, device) in devices.iter().enumerate() {
            let mut am = genesis.fork().with_actor(device.actor());
            for k in 0..args.visits {
                let visit = seeded.child_visit().into_visit(*device, DAY, (i * args.visits + k) as i64 + 1);
                doc::record_visit(&mut am, &visit, 1_795_395_600)?;
            }
            let push = DocPush {
                doc: meta.doc_id(),
                kind: meta.kind,
                posyandu: meta.posyandu.clone(),
                base: Vec::new(),
                heads: Heads::new(am.get_heads()).to_bytes(),
                changes: am.save(),
            };
            phones.push(Push { device: *device, push });
        }
        out.push(phones);
    }
    Ok(out)
}

/// Merge every push once, in order; returns the seconds it took and the visits projected.
fn storm(all: &[Vec<Push>]) -> Result<(f64, usize)> {
    let started = Instant::now();
    let mut projected = 0;
    for phones in all {
        let mut held: Option<(automerge::Automerge, Vec<u8>, StoredForm)> = None;
        for phone in phones {
            let rules = Rules { device: phone.device, limits: Limits::default(), now: 1_795_395_600 };
            let existing = held.as_ref().map(|(am, bytes, form)| Existing {
                kind: phone.push.kind,
                posyandu: &phone.push.posyandu,
                bytes,
                form: *form,
                loaded: Some(am.clone()),
            });
            let merged = core::merge_push(existing, &phone.push, &rules, &mut Default::default())?;
            if let Some(core::Projection { records: core::Records::Visits { visits, .. }, .. }) = &merged.projection {
                projected += visits.len();
            }
            if let (Some(write), Some(am)) = (merged.write, merged.doc) {
                let (mut bytes, form) = held.map(|(_, b, f)| (b, f)).unwrap_or_default();
                let form = form.after(&write);
                match write {
                    DocWrite::Whole(b) => bytes = b,
                    DocWrite::Append(chunk) => bytes.extend_from_slice(&chunk),
                }
                held = Some((am, bytes, form));
            }
        }
    }
    Ok((started.elapsed().as_secs_f64(), projected))
}

fn main() -> Result<()> {
    let args = Args::parse();
    if args.posyandu == 0 || args.posyandu > 500 || args.devices == 0 || args.devices > 8 {
        bail!("--posyandu must be 1..=500 and --devices 1..=8");
    }
    if args.visits > 100 || args.repeats == 0 || args.repeats > 50 {
        bail!("--visits is at most 100 and --repeats 1..=50");
    }
    let all = pushes(&args)?;
    let n: usize = all.iter().map(Vec::len).sum();
    let mut times = Vec::with_capacity(args.repeats);
    let mut projected = 0;
    for _ in 0..args.repeats {
        let (seconds, p) = storm(&all)?;
        times.push(seconds);
        projected = p;
    }
    times.sort_by(f64::total_cmp);
    let ms = |s: f64| (s * 1e6).round() / 1e3;
    let line = serde_json::json!({
        "phase": "merge_storm",
        "posyandu": args.posyandu,
        "devices_per_posyandu": args.devices,
        "visits_per_device": args.visits,
        "pushes": n,
        "records_projected": projected,
        "repeats": args.repeats,
        "ms_min": ms(times[0]),
        "ms_median": ms(times[times.len() / 2]),
        "ms_max": ms(times[times.len() - 1]),
        "ms_per_push_min": ms(times[0] / n as f64),
    });
    println!("{line}");
    Ok(())
}

//! `posync demo`: one posyandu day, end to end, on this machine only (127.0.0.1).

use anyhow::{Context, Result};
use posync_model::{Field, FieldValue, Role};
use posync_store::prelude::*;
use posync_testkit::{DAY, Generator, Phone, TestServer, posyandu};

fn kg(g: Option<i64>) -> String {
    g.map_or("-".into(), |g| format!("{:.1} kg", g as f64 / 1000.0))
}

pub async fn run(seed: u64) -> Result<()> {
    let server = TestServer::start().await;
    println!("posync demo — server on {} over {}", server.url(), server.store.path().display());
    let p = posyandu("banjar-melati-01");
    let names = ["Bu Sari", "Bu Rina", "Bu Yati"];
    let mut phones: Vec<Phone> = (0..3).map(|_| Phone::kader(&server, &p)).collect();
    let mut seeded = Generator::new(seed);

    println!("\n1. Hari buka at posyandu {p}, {DAY}. No signal: three kader capture offline.");
    let mut t = server.clock.now();
    let session = phones[0].replica.start_session(&p, DAY)?;
    for (i, phone) in phones.iter_mut().enumerate() {
        phone.replica.start_session(&p, DAY)?;
        for _ in 0..(4 - i.min(1)) {
            t += 60;
            phone.replica.record_visit(session, seeded.child_visit(), t)?;
        }
        println!(
            "   {} (device {}) recorded {} visits",
            names[i],
            short(&phone.replica.device().to_string()),
            phone.replica.visits(session)?.len()
        );
    }

    println!("\n2. {} walks to the road, gets signal, syncs; {} syncs too and sees her visits.", names[0], names[1]);
    let r = phones[0].sync(&server).await;
    println!("   {}: pushed {} doc, {} B up / {} B down", names[0], r.pushed_docs, r.bytes.up, r.bytes.down);
    let r = phones[1].sync(&server).await;
    println!(
        "   {}: pushed {} doc, pulled {}, {} B up / {} B down",
        names[1], r.pushed_docs, r.pulled_docs, r.bytes.up, r.bytes.down
    );

    let child = phones[0].replica.visits(session)?.into_iter().next().context("a visit")?;
    let visit_id = child.visit_id.parse()?;
    println!(
        "\n3. Offline again, both re-weigh {} ({}): {} writes 9.8 kg, {} writes 8.9 kg.",
        child.name,
        kg(child.weight_g),
        names[0],
        names[1]
    );
    phones[0].replica.edit_visit(session, visit_id, Field::WeightG, FieldValue::Int(9800), t + 600)?;
    phones[1].replica.edit_visit(session, visit_id, Field::WeightG, FieldValue::Int(8900), t + 601)?;
    phones[1].replica.edit_visit(
        session,
        visit_id,
        Field::Notes,
        FieldValue::Text("ditimbang ulang".into()),
        t + 602,
    )?;

    println!("\n4. Evening: everyone syncs.");
    for round in 0..2 {
        for (i, phone) in phones.iter_mut().enumerate() {
            let r = phone.sync(&server).await;
            if round == 0 {
                println!(
                    "   {}: pushed {}, pulled {}, {} B up / {} B down",
                    names[i], r.pushed_docs, r.pulled_docs, r.bytes.up, r.bytes.down
                );
            }
        }
    }

    println!("\n5. The puskesmas tablet pulls posyandu {p}.");
    let mut tablet = Phone::new(&server, Role::PuskesmasOfficer, std::slice::from_ref(&p));
    let r = tablet.sync(&server).await;
    println!("   pulled {} docs in {} round(s), {} B down", r.pulled_docs, r.rounds, r.bytes.down);
    let visits = tablet.replica.visits(session)?;
    println!("\n   {:<22} {:>3} {:>10} {:>8}  {:<10} under review", "child", "sex", "weight", "length", "recorded by");
    for v in &visits {
        let by =
            phones.iter().position(|ph| ph.replica.device().to_string() == v.recorded_by).map_or("?", |i| names[i]);
        let len = v.length_mm.map_or("-".into(), |l| format!("{:.1} cm", l as f64 / 10.0));
        println!("   {:<22} {:>3} {:>10} {:>8}  {:<10} {}", v.name, v.sex, kg(v.weight_g), len, by, v.conflicts);
    }
    let stats = server.store.stats().await?;
    println!(
        "\n   merged: {} visits from 3 phones; server holds {} docs, {} visit rows",
        visits.len(),
        stats.docs,
        stats.visits
    );

    println!("\n6. Conflicts kept for a person to decide (nothing silently dropped):");
    for c in tablet.replica.conflicts(session)? {
        let values: Vec<String> = c
            .values
            .iter()
            .map(|v| {
                let who = phones
                    .iter()
                    .position(|ph| v.actor == ph.replica.device().actor().to_hex_string())
                    .map_or("?", |i| names[i]);
                format!("{} by {}{}", v.value, who, if v.winner { " (shown now)" } else { "" })
            })
            .collect();
        println!("   {} -> {}", c.path(), values.join(" | "));
    }
    let same =
        phones.iter().all(|ph| posync_testkit::snapshot(&ph.replica) == posync_testkit::snapshot(&tablet.replica));
    println!("\n   all three phones and the tablet hold identical documents: {same}");
    server.stop().await;
    Ok(())
}

fn short(s: &str) -> &str {
    &s[..8.min(s.len())]
}

//! `posync kader`: a kader's phone on the command line. Capture works offline; results go to
//! stdout as one JSON line (scripts read them), and what a kader should see after a capture
//! (warnings, z-scores, nutrition status, weight gain) goes to stderr, Indonesian first.

use crate::link::{hint, server_url, sync_replica, with_ca};
use crate::output::{date_id, print_json, print_one};
use anyhow::{Context, Result, bail};
use clap::Subcommand;
use posync_model::growth::{self, Measurement};
use posync_model::record::{age_months, parse_date};
use posync_model::validate::{Issue, Severity};
use posync_model::{DocId, Field, FieldValue, LifeGroup, PersonId, PosyanduId, Sex, VisitId};
use posync_replica::{NewPerson, NewVisit, Replica};
use std::collections::BTreeMap;
use std::path::PathBuf;

#[derive(Subcommand)]
pub enum KaderCmd {
    /// Create the replica if needed and print its device id.
    Init {
        /// The phone's replica file (created if missing).
        #[arg(long)]
        replica: PathBuf,
    },
    /// Enrol this device with a one-time code from an admin (`posync admin enrol USER`).
    Enrol {
        /// The phone's replica file (created if missing).
        #[arg(long)]
        replica: PathBuf,
        /// The sync server, http://HOST:PORT or https://HOST[:PORT].
        #[arg(long, default_value = "http://127.0.0.1:8080", env = "POSYNC_SERVER")]
        server: String,
        /// The one-time enrolment code the admin gave you.
        #[arg(long)]
        code: String,
        /// Shown to admins in the device list.
        #[arg(long, default_value = "")]
        label: String,
        /// PEM file of a CA to trust beside the bundled web roots (a puskesmas server with
        /// its own certificate authority).
        #[arg(long, env = "POSYNC_CA_FILE")]
        ca_file: Option<PathBuf>,
    },
    /// Register a person (sasaran) in a posyandu's registry (offline); prints the person id
    /// to record their visits with `kader record --person ID`.
    Register {
        /// The phone's replica file (created if missing).
        #[arg(long)]
        replica: PathBuf,
        /// The posyandu the person belongs to (its id, e.g. pos-hegarsari-melati-1).
        #[arg(long)]
        posyandu: PosyanduId,
        /// The person's name.
        #[arg(long)]
        name: String,
        /// F or M (P or L).
        #[arg(long)]
        sex: String,
        /// Birth date, YYYY-MM-DD.
        #[arg(long)]
        birth_date: String,
        /// The person's own NIK (16 digits), when they have one.
        #[arg(long)]
        nik: Option<String>,
        /// The mother's NIK (16 digits): how a child without its own NIK is identified.
        #[arg(long)]
        mother_nik: Option<String>,
        /// The mother's name (for a child).
        #[arg(long, default_value = "")]
        mother_name: String,
        /// Street, hamlet (dusun) or house description.
        #[arg(long, default_value = "")]
        address: String,
        /// Rukun Tetangga number.
        #[arg(long)]
        rt: Option<i64>,
        /// Rukun Warga number.
        #[arg(long)]
        rw: Option<i64>,
        /// Pregnant now (recorded as ibu hamil whatever her age).
        #[arg(long)]
        pregnant: bool,
        /// Holds a KIA book / growth card (K of SKDN).
        #[arg(long)]
        kia_book: bool,
    },
    /// List the people registered on this phone, as JSON lines (their ids for --person).
    People {
        /// The phone's replica file (created if missing).
        #[arg(long)]
        replica: PathBuf,
        /// Only this posyandu's registry.
        #[arg(long)]
        posyandu: Option<PosyanduId>,
    },
    /// Record a visit (offline): of a registered person (--person), or of someone not yet
    /// registered (--name, --sex, --birth-date). Prints warnings, z-scores and nutrition status.
    Record {
        /// The phone's replica file (created if missing).
        #[arg(long)]
        replica: PathBuf,
        /// A registered person (from `kader register` or `kader people`): their name, sex,
        /// birth date and posyandu come from the registry, and their earlier visits are linked.
        #[arg(long, conflicts_with_all = ["name", "sex", "birth_date"])]
        person: Option<PersonId>,
        /// The posyandu of the session (its id, e.g. pos-hegarsari-melati-1). Default with
        /// --person: the person's posyandu.
        #[arg(long)]
        posyandu: Option<PosyanduId>,
        /// Session day, YYYY-MM-DD (default: today).
        #[arg(long)]
        date: Option<String>,
        /// The person's name (without --person).
        #[arg(long)]
        name: Option<String>,
        /// F or M (P or L) (without --person).
        #[arg(long)]
        sex: Option<String>,
        /// Birth date, YYYY-MM-DD (without --person).
        #[arg(long)]
        birth_date: Option<String>,
        /// Weight in grams.
        #[arg(long)]
        weight_g: Option<i64>,
        /// Length (under 2 years, lying) or height, in millimetres.
        #[arg(long)]
        length_mm: Option<i64>,
        /// How the length was measured: lying (telentang) or standing (berdiri). WHO corrects
        /// by 0.7 cm when the position does not fit the age.
        #[arg(long, value_parser = ["lying", "standing"])]
        position: Option<String>,
        /// Head circumference in millimetres.
        #[arg(long)]
        head_circ_mm: Option<i64>,
        /// Mid-upper arm circumference (LILA) in millimetres.
        #[arg(long)]
        muac_mm: Option<i64>,
        /// An immunisation given at this visit, by antigen code (repeat): HB0, BCG, OPV-1,
        /// DPT-HB-Hib-1, PCV-1, RV-1, IPV-1, MR-1, ...
        #[arg(long)]
        immunisation: Vec<String>,
        /// Vitamin A capsule given: blue (100,000 IU, 6-11 months) or red (200,000 IU, 12-59 months).
        #[arg(long, value_parser = ["blue", "red"])]
        vitamin_a: Option<String>,
        /// Free-text notes for the visit.
        #[arg(long, default_value = "")]
        notes: String,
        /// Life-cycle group (balita, ibu_hamil, ibu_nifas, usia_sekolah, remaja,
        /// usia_produktif, lansia). Default: by age.
        #[arg(long)]
        group: Option<String>,
        /// A group service or measurement, KEY=VALUE (repeat): bp_systolic=120,
        /// iron_tablets=30, growth_card=true, ...
        #[arg(long)]
        service: Vec<String>,
    },
    /// Change one field of a visit (offline).
    Edit {
        /// The phone's replica file (created if missing).
        #[arg(long)]
        replica: PathBuf,
        /// The session document id (as `kader record` printed it).
        #[arg(long)]
        session: DocId,
        /// The visit id (as `kader record` printed it).
        #[arg(long)]
        visit: VisitId,
        /// Field key, e.g. weight_g.
        #[arg(long)]
        field: String,
        /// New value (integers for measurements).
        #[arg(long)]
        value: String,
    },
    /// Sync with the server.
    Sync {
        /// The phone's replica file (created if missing).
        #[arg(long)]
        replica: PathBuf,
        /// The sync server, http://HOST:PORT or https://HOST[:PORT]. Default: the one this phone
        /// enrolled with, else http://127.0.0.1:8080.
        #[arg(long, env = "POSYNC_SERVER")]
        server: Option<String>,
        /// A bearer token; default: the device credential stored by `kader enrol`.
        #[arg(long, env = "POSYNC_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// PEM file of a CA to trust beside the bundled web roots (a puskesmas server with
        /// its own certificate authority).
        #[arg(long, env = "POSYNC_CA_FILE")]
        ca_file: Option<PathBuf>,
    },
    /// List visits on this phone as JSON lines (times as dates).
    Visits {
        /// The phone's replica file (created if missing).
        #[arg(long)]
        replica: PathBuf,
        /// Only this person's visits, oldest first.
        #[arg(long)]
        person: Option<PersonId>,
    },
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

fn date_arg(value: &str, flag: &str) -> Result<time::Date> {
    parse_date(value).with_context(|| format!("{flag} must be a date as YYYY-MM-DD, e.g. 2025-06-01"))
}

fn sex_arg(value: &str) -> Result<Sex> {
    Sex::parse(value).context("--sex must be F or M (P or L)")
}

pub async fn run(cmd: KaderCmd) -> Result<()> {
    match cmd {
        KaderCmd::Init { replica } => out!("{}", Replica::open(&replica)?.device()),
        KaderCmd::Register {
            replica,
            posyandu,
            name,
            sex,
            birth_date,
            nik,
            mother_nik,
            mother_name,
            address,
            rt,
            rw,
            pregnant,
            kia_book,
        } => {
            let mut r = Replica::open(&replica)?;
            let sex = sex_arg(&sex)?;
            let birth_date = date_arg(&birth_date, "--birth-date")?;
            let person = NewPerson {
                name: name.clone(),
                sex,
                birth_date,
                mother_name,
                nik,
                mother_nik,
                address,
                rt,
                rw,
                pregnant,
                kia_book,
            };
            let id = r.register_person(&posyandu, person, now()).map_err(refused("registration"))?;
            out!("{}", serde_json::json!({ "person": id.to_string(), "posyandu": posyandu.as_str() }));
            eprintln!(
                "Terdaftar: {name} ({}), lahir {}. Catat kunjungannya dengan --person {id}\n\
                 Registered: record their visits with --person {id}",
                sex_id(sex),
                date_id(birth_date)
            );
        }
        KaderCmd::People { replica, posyandu } => {
            print_json(Replica::open(&replica)?.people(posyandu.as_ref())?)?;
        }
        KaderCmd::Record {
            replica,
            person,
            posyandu,
            date,
            name,
            sex,
            birth_date,
            weight_g,
            length_mm,
            position,
            head_circ_mm,
            muac_mm,
            immunisation,
            vitamin_a,
            notes,
            group,
            service,
        } => {
            let mut r = Replica::open(&replica)?;
            let date = match date {
                Some(d) => date_arg(&d, "--date")?,
                None => time::OffsetDateTime::now_utc().date(),
            };
            let who = match person {
                Some(id) => registered(&r, id)?,
                None => Who::walk_in(name, sex, birth_date)?,
            };
            let Some(posyandu) = posyandu.or(who.posyandu.clone()) else {
                bail!("give --posyandu (the posyandu of the session), or --person ID of someone registered there")
            };
            let visit = NewVisit {
                person_id: who.person_id,
                name: who.name,
                sex: who.sex,
                birth_date: who.birth_date,
                weight_g,
                length_mm,
                lying: position.map(|p| p == "lying"),
                head_circ_mm,
                muac_mm,
                immunisations: immunisation.into_iter().map(|antigen| (antigen, date)).collect(),
                vitamin_a: vitamin_a.as_deref().and_then(posync_model::VitaminA::parse),
                notes,
                group: group
                    .as_deref()
                    .map(|g| LifeGroup::parse(g).context("unknown --group: balita, ibu_hamil, ibu_nifas, usia_sekolah, remaja, usia_produktif or lansia"))
                    .transpose()?,
                services: parse_services(&service)?,
            };
            record(&mut r, &posyandu, date, visit)?;
        }
        KaderCmd::Edit { replica, session, visit, field, value } => {
            let mut r = Replica::open(&replica)?;
            let Some(f) = Field::from_key(&field) else { bail!("unknown field {field:?}") };
            let Some(v) = f.parse_value(&value) else { bail!("{value:?} is not a {field} value") };
            r.edit_visit(session, visit, f, v, now())?;
        }
        KaderCmd::Sync { replica, server, token, ca_file } => sync_replica(&replica, server, token, ca_file).await?,
        KaderCmd::Enrol { replica, server, code, label, ca_file } => {
            let mut r = Replica::open(&replica)?;
            let client = with_ca(posync_replica::HttpSync::enrolled(server_url(&server)?), ca_file.as_deref())?;
            let resp = posync_replica::enrol_via(&client, &code, &label, &mut r).await.map_err(hint)?;
            r.set_server_url(&server)?;
            out!("{{\"device\":\"{}\",\"user\":\"{}\",\"role\":\"{}\"}}", r.device(), resp.user, resp.role);
        }
        KaderCmd::Visits { replica, person } => {
            let r = Replica::open(&replica)?;
            let rows = match person {
                Some(id) => r.visits_of(id)?,
                None => r.all_visits()?,
            };
            print_json(rows)?;
        }
    }
    Ok(())
}

/// Who a visit is of: a registered person, or someone recorded without registering.
struct Who {
    person_id: PersonId,
    posyandu: Option<PosyanduId>,
    name: String,
    sex: Sex,
    birth_date: time::Date,
}

impl Who {
    fn walk_in(name: Option<String>, sex: Option<String>, birth_date: Option<String>) -> Result<Self> {
        let (Some(name), Some(sex), Some(birth_date)) = (name, sex, birth_date) else {
            bail!(
                "say who the visit is of: --person ID of someone registered (see `posync kader people`), \
                 or --name, --sex and --birth-date"
            )
        };
        Ok(Who {
            person_id: PersonId::new_random(),
            posyandu: None,
            name,
            sex: sex_arg(&sex)?,
            birth_date: date_arg(&birth_date, "--birth-date")?,
        })
    }
}

fn registered(r: &Replica, id: PersonId) -> Result<Who> {
    let Some(p) = r.person(id)? else {
        bail!(
            "no person {id} on this phone: list the registered people with `posync kader people`, \
             or sync to receive people registered on other phones"
        )
    };
    let birth_date = parse_date(&p.birth_date).context("the registry holds a birth date that is not a date")?;
    Ok(Who {
        person_id: id,
        posyandu: p.posyandu.parse().ok(),
        name: p.name,
        sex: Sex::parse(&p.sex).context("the registry holds a sex that is not F or M")?,
        birth_date,
    })
}

/// Check, record, and tell the kader what the measurements say. Errors refuse the capture
/// (nothing is written); warnings are shown with the recorded visit.
fn record(r: &mut Replica, posyandu: &PosyanduId, date: time::Date, visit: NewVisit) -> Result<()> {
    let session = r.start_session(posyandu, date)?;
    let captured = r.capture_visit(session, visit, now()).map_err(refused("visit"))?;
    let shown = &captured.visit;
    let growth = (shown.group == LifeGroup::Balita).then(|| Growth::of(shown, date, captured.previous));
    print_one(&serde_json::json!({
        "session": session.to_string(),
        "visit": shown.visit_id.to_string(),
        "person": shown.person_id.to_string(),
        "group": shown.group.code(),
        "warnings": captured.warnings,
        "growth": growth,
    }))?;
    eprintln!(
        "Tercatat: {} ({}), {}, sesi {} / Recorded",
        shown.name,
        sex_id(shown.sex),
        age_id(shown.birth_date, date),
        date_id(date)
    );
    if let Some(g) = &growth {
        for line in g.lines() {
            eprintln!("  {line}");
        }
    }
    for issue in &captured.warnings {
        eprintln!("{}", issue_line(issue));
    }
    Ok(())
}

/// What a child's measurements say: z-scores, status by Permenkes 2/2020, weight gain.
#[derive(serde::Serialize)]
struct Growth {
    age_months: i64,
    z: growth::ZScores,
    status: growth::Classification,
    /// N or T against last month's weighing, with the grams gained.
    weight_gain: Option<posync_model::report::WeightGain>,
    gained_g: Option<i64>,
}

impl Growth {
    fn of(v: &posync_model::Visit, date: time::Date, previous: Option<posync_model::validate::Previous>) -> Self {
        let z = growth::zscores(&Measurement::of_visit(v, date));
        let before = previous.and_then(|p| Some((p.date, p.weight_g?)));
        let (weight_gain, gained_g) = match (v.weight_g, before) {
            (Some(w), Some(b)) => (posync_model::report::weight_gain(v.birth_date, date, w, b), Some(w - b.1)),
            _ => (None, None),
        };
        Growth { age_months: age_months(v.birth_date, date), status: growth::classify(&z), z, weight_gain, gained_g }
    }

    /// One line per indicator: Indonesian name, z-score, status in Indonesian and English.
    fn lines(&self) -> Vec<String> {
        let s = &self.status;
        let rows: [(&str, Option<f64>, Option<growth::StatusLabel>); 4] = [
            ("BB/U  (berat/umur)   ", self.z.wfa, s.wfa.map(|c| c.label())),
            ("PB/U  (panjang/umur) ", self.z.lhfa, s.lhfa.map(|c| c.label())),
            ("BB/PB (berat/panjang)", self.z.wflh, s.wflh.map(|c| c.label())),
            ("IMT/U (IMT/umur)     ", self.z.bmifa, s.bmifa.map(|c| c.label())),
        ];
        let mut out: Vec<String> = rows
            .into_iter()
            .filter_map(|(name, z, status)| {
                let z = z?;
                let (id, en) = status.map_or(("periksa ulang", "implausible, check the measurement"), |l| (l.id, l.en));
                Some(format!("{name}  z {:>6}  {id} / {en}", decimal_id(z)))
            })
            .collect();
        if let (Some(gain), Some(g)) = (self.weight_gain, self.gained_g) {
            let (id, en) = match gain {
                posync_model::report::WeightGain::N => ("Naik (N)", "gained enough"),
                posync_model::report::WeightGain::T => ("Tidak naik (T)", "did not gain enough"),
            };
            out.push(format!("Berat sejak bulan lalu: {g:+} g, {id} / weight since last month: {en}"));
        }
        out
    }
}

/// A number as Indonesian writes it: a decimal comma (`-1,25`).
fn decimal_id(v: f64) -> String {
    format!("{v:.2}").replace('.', ",")
}

fn sex_id(sex: Sex) -> &'static str {
    match sex {
        Sex::Female => "P",
        Sex::Male => "L",
    }
}

/// Age as a posyandu says it: months under five, years after.
fn age_id(birth: time::Date, on: time::Date) -> String {
    let months = age_months(birth, on);
    if months < 60 { format!("umur {months} bulan") } else { format!("umur {} tahun", months / 12) }
}

fn issue_line(issue: &Issue) -> String {
    let label = match issue.severity {
        Severity::Error => "Salah/Error",
        Severity::Warning => "Peringatan/Warning",
    };
    format!("  {label} [{}]: {} / {}", issue.field, issue.message_id, issue.message_en)
}

/// A capture the replica refused, with what is wrong in words a kader can act on.
fn refused(what: &'static str) -> impl Fn(posync_replica::ReplicaError) -> anyhow::Error {
    move |e| match e {
        posync_replica::ReplicaError::Rejected(issues) => {
            for issue in &issues {
                eprintln!("{}", issue_line(issue));
            }
            anyhow::anyhow!("nothing was recorded: correct the values marked Salah/Error above and try again")
        }
        posync_replica::ReplicaError::Doc(posync_model::DocError::Invalid(why)) => {
            anyhow::anyhow!("the {what} was not recorded: {why}")
        }
        other => other.into(),
    }
}

/// `KEY=VALUE` pairs into typed service fields (see [`Field::parse_value`]).
fn parse_services(pairs: &[String]) -> Result<BTreeMap<Field, FieldValue>> {
    let mut out = BTreeMap::new();
    for pair in pairs {
        let Some((key, value)) = pair.split_once('=') else { bail!("--service takes KEY=VALUE, got {pair:?}") };
        let Some(field) = Field::from_key(key).filter(|f| Field::SERVICES.contains(f)) else {
            bail!("unknown service {key:?}")
        };
        let Some(value) = field.parse_value(value) else { bail!("--service {key}: {value:?} is not a {key} value") };
        out.insert(field, value);
    }
    Ok(out)
}

//! `ParseBulkCsv`: read one uploaded CSV file (stored in Postgres in 1 MiB
//! parts) as a stream and hold its valid rows' notifications in chunks.
//!
//! First the whole file is read once without storing anything, to find the
//! errors that refuse a file (no header or one without the mapped columns,
//! invalid UTF-8, unbalanced quotes, no rows): such a file fails the job and
//! nothing of it is sent. Then it is read part by part from the job's
//! resume cursor. After each part, the notifications of its valid rows
//! (validated and rendered here, so every row error is known when the
//! parse ends), held in chunks of up to 1,000 rows, its row errors, the
//! counters and the cursor are committed in one transaction, so a parser
//! killed at any moment is resumed, by another worker, from its last
//! commit: no row lost, none counted twice. Right after each commit the
//! part's chunks are pushed to the `bulk_chunk` queue, whose jobs
//! ([`super::expand_bulk_chunk`]) insert them into `notifications`, so
//! sending overlaps the parse while the parse itself writes only a few rows
//! per part.
//!
//! A recipient that appears again (by the first channel's address) is
//! reported as a duplicate of its first row and sent once.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Context;
use apalis_core::{error::BoxDynError, task::data::Data, task::task_id::TaskId};
use serde_json::{Map, Value, json};
use shared::{
    csv_rows::{CsvRows, Record},
    db::bulk::{self, Chunk, HeldNotification, Mapping, PART_BYTES, RowError},
    domain::{BulkJobId, Channel, TenantId, recipient},
    events::Event,
    jobs::{ExpandBulkChunk, Job, ParseBulkCsv, QueueName},
    outbox::{self, Enqueued},
    templates::Prepared,
};
use tracing::Instrument;

use crate::WorkerState;

/// Longest value of a data column.
pub const MAX_DATA_CHARS: usize = 1_000;

/// Runs one `ParseBulkCsv` job.
pub async fn handle(
    job: ParseBulkCsv,
    state: Data<Arc<WorkerState>>,
    task_id: TaskId,
) -> Result<(), BoxDynError> {
    let span = tracing::info_span!(
        "job",
        queue = %QueueName::BulkCsv,
        job = ParseBulkCsv::NAME,
        job_id = %task_id,
        tenant_id = %job.tenant_id,
        bulk_job_id = %job.job_id,
    );
    async move {
        if state.queues.is_paused(QueueName::BulkCsv).await {
            // Back to Postgres: the dispatcher feeds it once resumed.
            outbox::hand_back(&state.pool, &job).await;
            return Ok(());
        }
        let started = std::time::Instant::now();
        let parsed = parse(&state, job.tenant_id, job.job_id).await;
        crate::jobs::count_job(
            &state,
            QueueName::BulkCsv,
            Some(job.tenant_id),
            parsed.is_ok(),
            started,
        );
        if let Err(error) = parsed {
            // The lease runs out and the dispatcher hands the job to a
            // parser again, which resumes from the last commit.
            tracing::error!(error = %format!("{error:#}"), "cannot parse the file; it will resume");
            metrics::counter!("jobs_failed_total", "queue" => QueueName::BulkCsv.as_str())
                .increment(1);
        }
        Ok(())
    }
    .instrument(span)
    .await
}

/// The parse's fixed context.
struct Parse {
    mapping: Mapping,
    channels: Vec<Channel>,
    template: Prepared,
    locale: Option<String>,
    max_attempts: Vec<i32>,
}

/// Where each mapped column is in the header.
struct Columns {
    index: HashMap<String, usize>,
}

async fn parse(state: &WorkerState, tenant_id: TenantId, id: BulkJobId) -> anyhow::Result<()> {
    let lease = state.jobs.queue(QueueName::BulkCsv).timeout();
    let Some(claimed) = bulk::claim(&state.pool, tenant_id, id, lease)
        .await
        .context("while claiming the job")?
    else {
        tracing::debug!("another parser holds the job, or it is finished");
        return Ok(());
    };
    let mapping: Mapping =
        serde_json::from_value(claimed.mapping.0).context("while reading the mapping")?;
    let channels: Vec<Channel> = claimed
        .channels
        .iter()
        .filter_map(|c| Channel::parse(c))
        .collect();
    let template = shared::db::templates::get_by_key(&state.pool, tenant_id, &claimed.template_key)
        .await
        .context("while reading the template")?;
    let Some(template) = template.map(|t| t.template) else {
        let mut conn = state.pool.acquire().await?;
        bulk::fail(
            &mut conn,
            tenant_id,
            id,
            "the job's template no longer exists",
        )
        .await?;
        return Ok(());
    };
    // A job that committed rows before files were checked first holds them
    // until its file has parsed; every other job checks the file first.
    let hold = claimed.checked_at.is_none() && claimed.cursor_offset > 0;
    if claimed.checked_at.is_none() && !hold {
        let started = Instant::now();
        match check(state, tenant_id, id, &mapping, lease).await? {
            Checked::Clean => {}
            Checked::Refused(reason) => {
                let mut conn = state.pool.acquire().await?;
                bulk::fail(&mut conn, tenant_id, id, &reason).await?;
                tracing::warn!(reason, "the file is refused; nothing is sent");
                publish(state, tenant_id, id, "failed").await;
                return Ok(());
            }
            Checked::Stopped => {
                tracing::info!("the job was cancelled while its file was checked; stopping");
                return Ok(());
            }
        }
        if !bulk::extend_lease(&state.pool, tenant_id, id, lease, true).await? {
            tracing::info!("the job was cancelled while its file was checked; stopping");
            return Ok(());
        }
        tracing::info!(
            elapsed_ms = started.elapsed().as_millis() as u64,
            "file checked"
        );
    }
    let cx = Parse {
        max_attempts: channels
            .iter()
            .map(|c| state.jobs.queue(QueueName::for_channel(*c)).max_attempts as i32)
            .collect(),
        mapping,
        channels,
        template: Prepared::new(template),
        locale: claimed.locale.clone(),
    };
    let key_channel = cx.channels[0];
    let mut seen: HashMap<String, i64> =
        bulk::seen_recipients(&state.pool, tenant_id, id, key_channel)
            .await
            .context("while reading the rows already taken")?
            .into_iter()
            .map(|(recipient, row)| (dedupe_key(key_channel, &recipient), row))
            .collect();
    let mut columns = match &claimed.header {
        Some(h) => Some(columns_of(&cx.mapping, h).map_err(anyhow::Error::msg)?),
        None => None,
    };
    let mut committed = claimed.cursor_offset;
    let mut row = claimed.cursor_row;
    let mut reader = CsvRows::starting_at(committed as u64);
    let mut part_no = (committed as usize / PART_BYTES) as i32;
    let mut skip = committed as usize % PART_BYTES;
    let category = cx.template.template().category().map(str::to_owned);
    let critical = cx.template.template().critical();
    loop {
        let data = bulk::part(&mut *state.pool.acquire().await?, tenant_id, id, part_no)
            .await
            .context("while reading a part of the file")?;
        let eof = data.is_none();
        let data = data.unwrap_or_default();
        let input = data.get(skip..).unwrap_or_default();
        skip = 0;
        let mut chunk = Chunk {
            next_offset: committed,
            ..Chunk::default()
        };
        let mut file_error: Option<String> = None;
        let fed = reader.feed(input, &mut |record| {
            let step = match &columns {
                None => read_header(&cx.mapping, &record).map(|(names, cols)| {
                    chunk.header = Some(names);
                    columns = Some(cols);
                }),
                Some(cols) => {
                    row += 1;
                    read_row(&cx, cols, &record, row, &mut seen, &mut chunk)
                }
            };
            chunk.next_offset = record.end_offset as i64;
            match step {
                Ok(()) => true,
                Err(e) => {
                    file_error = Some(e);
                    false
                }
            }
        });
        if let Err(e) = fed {
            file_error = Some(e.to_string());
        }
        if file_error.is_none() && eof {
            if columns.is_none() {
                file_error = Some("the file is empty".into());
            } else if row == 0 {
                file_error = Some("the file has a header but no rows".into());
            }
        }
        let mut tx = state.pool.begin().await?;
        if let Some(reason) = file_error {
            bulk::fail(&mut tx, tenant_id, id, &reason).await?;
            tx.commit().await?;
            tracing::warn!(reason, "the file is refused; nothing is sent");
            publish(state, tenant_id, id, "failed").await;
            return Ok(());
        }
        let mut seqs = Vec::new();
        if chunk.rows > 0 || chunk.header.is_some() {
            let part = bulk::Part {
                from_offset: committed,
                chunk: &chunk,
                category: category.as_deref(),
                critical,
            };
            match bulk::commit_chunk(&mut tx, tenant_id, id, &part, lease)
                .await
                .context("while committing a part")?
            {
                Some(s) => seqs = s,
                None => {
                    tracing::info!("the job was cancelled or taken over; stopping");
                    return Ok(());
                }
            }
        }
        committed = chunk.next_offset;
        if eof {
            let released = bulk::release(&mut tx, tenant_id, id, hold).await?;
            tx.commit().await?;
            push_chunks(state, tenant_id, id, seqs).await?;
            if released {
                tracing::info!(rows = row, "file parsed");
                publish(state, tenant_id, id, "sending").await;
            }
            return Ok(());
        }
        tx.commit().await?;
        push_chunks(state, tenant_id, id, seqs).await?;
        metrics::counter!("bulk_rows_read_total").increment(chunk.rows as u64);
        publish(state, tenant_id, id, "parsing").await;
        part_no += 1;
    }
}

/// What the first read of a file found.
enum Checked {
    /// No file-level error.
    Clean,
    /// The file is refused, for this reason.
    Refused(String),
    /// The job is no longer the parser's (cancelled).
    Stopped,
}

/// How often, at most, a long check extends the parser's lease.
const RENEW_EVERY: Duration = Duration::from_secs(5);

/// Reads the whole file without storing anything and finds the first
/// file-level error, exactly as the parse itself would meet it.
async fn check(
    state: &WorkerState,
    tenant_id: TenantId,
    id: BulkJobId,
    mapping: &Mapping,
    lease: Duration,
) -> anyhow::Result<Checked> {
    let mut reader = CsvRows::starting_at(0);
    let mut header = false;
    let mut rows: i64 = 0;
    let renew_every = (lease / 3).min(RENEW_EVERY);
    let mut renewed = Instant::now();
    for part_no in 0.. {
        let data = bulk::part(&mut *state.pool.acquire().await?, tenant_id, id, part_no)
            .await
            .context("while reading a part of the file")?;
        let eof = data.is_none();
        let data = data.unwrap_or_default();
        let mut problem: Option<String> = None;
        let fed = reader.feed(&data, &mut |record| {
            let step = if header {
                rows += 1;
                match (0..record.len()).find(|&i| record.field(i).is_some_and(|f| f.is_err())) {
                    Some(i) => Err(format!("invalid UTF-8 in row {rows}, column {}", i + 1)),
                    None => Ok(()),
                }
            } else {
                read_header(mapping, &record).map(|_| header = true)
            };
            match step {
                Ok(()) => true,
                Err(e) => {
                    problem = Some(e);
                    false
                }
            }
        });
        if let Err(e) = fed {
            problem = Some(e.to_string());
        }
        if problem.is_none() && eof {
            if !header {
                problem = Some("the file is empty".into());
            } else if rows == 0 {
                problem = Some("the file has a header but no rows".into());
            }
        }
        if let Some(reason) = problem {
            return Ok(Checked::Refused(reason));
        }
        if eof {
            break;
        }
        if renewed.elapsed() >= renew_every {
            if !bulk::extend_lease(&state.pool, tenant_id, id, lease, false).await? {
                return Ok(Checked::Stopped);
            }
            renewed = Instant::now();
        }
    }
    Ok(Checked::Clean)
}

/// Pushes the expansion jobs of chunks just committed; on failure they are
/// marked not pushed, and the dispatcher's sweep pushes them.
async fn push_chunks(
    state: &WorkerState,
    tenant_id: TenantId,
    id: BulkJobId,
    seqs: Vec<i64>,
) -> anyhow::Result<()> {
    if seqs.is_empty() {
        return Ok(());
    }
    let jobs: Vec<ExpandBulkChunk> = seqs
        .into_iter()
        .map(|seq| ExpandBulkChunk {
            tenant_id,
            job_id: id,
            seq,
        })
        .collect();
    Enqueued::new(jobs)
        .push(&state.queues, &state.pool)
        .await
        .context("while marking chunks not pushed")?;
    Ok(())
}

async fn publish(state: &WorkerState, tenant_id: TenantId, id: BulkJobId, status: &str) {
    let event = Event {
        tenant_id,
        topic: format!("bulk:{id}"),
        kind: "bulk.progress".into(),
        id: None,
        data: json!({"job_id": id, "status": status}),
        at: chrono::Utc::now(),
    };
    if let Err(error) = shared::events::publish(&state.queues, &[event]).await {
        tracing::warn!(%error, "cannot publish bulk progress");
    }
}

fn columns_of(mapping: &Mapping, header: &[String]) -> Result<Columns, String> {
    let missing: Vec<&str> = mapping
        .columns()
        .into_iter()
        .filter(|c| !header.iter().any(|h| h == c))
        .collect();
    if !missing.is_empty() {
        return Err(format!(
            "missing header: the first row must name the columns; not found: {}",
            missing.join(", ")
        ));
    }
    let mut index = HashMap::new();
    for (i, h) in header.iter().enumerate() {
        index.entry(h.clone()).or_insert(i);
    }
    Ok(Columns { index })
}

fn read_header(mapping: &Mapping, record: &Record<'_>) -> Result<(Vec<String>, Columns), String> {
    let names: Vec<String> = record
        .fields()
        .map_err(|i| format!("invalid UTF-8 in the header, column {}", i + 1))?
        .into_iter()
        .map(|s| s.trim().to_owned())
        .collect();
    let cols = columns_of(mapping, &names)?;
    Ok((names, cols))
}

/// Validates one row and adds its notifications or errors to `chunk`. Only
/// file-level problems (invalid UTF-8) are `Err`.
fn read_row(
    cx: &Parse,
    cols: &Columns,
    record: &Record<'_>,
    row: i64,
    seen: &mut HashMap<String, i64>,
    chunk: &mut Chunk,
) -> Result<(), String> {
    chunk.rows += 1;
    let fields = record
        .fields()
        .map_err(|i| format!("invalid UTF-8 in row {row}, column {}", i + 1))?;
    // Postgres text cannot hold a NUL, and no address or template value
    // means one: the row is refused, the rest of the file goes on.
    if let Some(i) = fields.iter().position(|f| f.contains('\0')) {
        let column = cols.index.iter().find(|(_, j)| **j == i).map_or_else(
            || format!("column {}", i + 1),
            |(name, _)| name.replace('\0', "\u{FFFD}"),
        );
        chunk.invalid += 1;
        chunk.errors.push(RowError {
            row,
            column,
            reason: "must not contain NUL characters (U+0000)".into(),
            value: None,
        });
        return Ok(());
    }
    let value = |column: &str| -> Option<&str> {
        cols.index
            .get(column)
            .and_then(|i| fields.get(*i))
            .map(|v| v.trim())
            .filter(|v| !v.is_empty())
    };
    let mut errors: Vec<RowError> = Vec::new();
    let error = |errors: &mut Vec<RowError>, column: &str, reason: String, value: Option<&str>| {
        errors.push(RowError {
            row,
            column: column.to_owned(),
            reason,
            value: value.map(str::to_owned),
        })
    };
    let subscriber = match cx.mapping.subscriber_id.as_deref() {
        Some(col) => match value(col) {
            Some(v) => match recipient(Channel::InApp, v) {
                Ok(id) => Some(id),
                Err(e) => {
                    error(&mut errors, col, e.0, Some(v));
                    None
                }
            },
            None => None,
        },
        None => None,
    };
    let mut recipients = Vec::with_capacity(cx.channels.len());
    for &channel in &cx.channels {
        let Some(col) = cx.mapping.column_for(channel) else {
            continue;
        };
        let parsed =
            match (value(col), channel) {
                (None, _) => Err("is required".to_owned()),
                // Each address is checked as a single send to it would be.
                (Some(v), Channel::Email) => recipient(channel, v)
                    .map_err(|e| format!("is not a valid email address: {}", e.0)),
                (Some(v), Channel::Sms | Channel::WhatsApp) => recipient(channel, v)
                    .map_err(|e| format!("is not a valid phone number: {}", e.0)),
                (Some(_), _) => subscriber.clone().ok_or_else(|| "is not valid".to_owned()),
            };
        match parsed {
            Ok(r) => recipients.push((channel, r)),
            Err(reason) => {
                if !errors.iter().any(|e| e.column == col) {
                    error(&mut errors, col, reason, value(col));
                }
            }
        }
    }
    let mut data = Map::new();
    for (var, col) in &cx.mapping.data {
        match value(col) {
            None => error(&mut errors, col, "is required".into(), None),
            Some(v) if v.chars().count() > MAX_DATA_CHARS => error(
                &mut errors,
                col,
                format!("is over its limit of {MAX_DATA_CHARS} characters"),
                Some(v),
            ),
            Some(v) => {
                data.insert(var.clone(), Value::String(v.to_owned()));
            }
        }
    }
    let data = Value::Object(data);
    let mut held = Vec::with_capacity(recipients.len());
    if errors.is_empty() {
        for (channel, recipient) in &recipients {
            let i = cx.channels.iter().position(|c| c == channel).unwrap_or(0);
            match cx.template.render(*channel, cx.locale.as_deref(), &data) {
                Ok(rendered) => held.push(HeldNotification {
                    row,
                    channel: *channel,
                    recipient: recipient.clone(),
                    content: rendered.content.to_stored(),
                    subscriber: subscriber.clone(),
                    max_attempts: cx.max_attempts[i],
                }),
                Err(e) => error(&mut errors, "template", e.to_string(), None),
            }
        }
    }
    if !errors.is_empty() {
        chunk.invalid += 1;
        chunk.errors.extend(errors);
        return Ok(());
    }
    // Duplicates, by the first channel's address.
    let Some((key_channel, address)) = recipients.first() else {
        chunk.invalid += 1;
        chunk.errors.push(RowError {
            row,
            column: String::new(),
            reason: "no column of the mapping gives a recipient".into(),
            value: None,
        });
        return Ok(());
    };
    let key = dedupe_key(*key_channel, address);
    if let Some(first) = seen.get(&key) {
        chunk.duplicates += 1;
        chunk.errors.push(RowError {
            row,
            column: cx
                .mapping
                .column_for(*key_channel)
                .unwrap_or_default()
                .to_owned(),
            reason: format!("duplicate of row {first}: sent once"),
            value: Some(address.clone()),
        });
        return Ok(());
    }
    seen.insert(key, row);
    chunk.valid += 1;
    chunk.notifications.extend(held);
    Ok(())
}

/// Two rows are the same recipient when their first channel's addresses
/// match; email addresses regardless of case.
fn dedupe_key(channel: Channel, address: &str) -> String {
    match channel {
        Channel::Email => address.to_lowercase(),
        _ => address.to_owned(),
    }
}

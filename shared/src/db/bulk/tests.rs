use serde_json::json;

use super::*;

fn held(row: i64, channel: Channel) -> HeldNotification {
    HeldNotification {
        row,
        channel,
        recipient: format!("r{row}"),
        content: json!({"title": "t"}),
        subscriber: None,
        max_attempts: 3,
    }
}

#[test]
fn chunks_hold_up_to_a_thousand_rows_and_never_split_a_row() {
    // 2,500 rows on two channels, with a gap (an invalid row) at 1,001.
    let n: Vec<HeldNotification> = (1..=2_501)
        .filter(|r| *r != 1_001)
        .flat_map(|r| [held(r, Channel::Email), held(r, Channel::Sms)])
        .collect();
    let chunks = chunks_of(&n);
    let shape: Vec<(i64, i32, usize)> = chunks.iter().map(|c| (c.0, c.1, c.2.len())).collect();
    assert_eq!(
        shape,
        vec![
            (1, 1_000, 2_000),
            (1_002, 1_000, 2_000),
            (2_002, 500, 1_000)
        ]
    );
    assert!(chunks_of(&[]).is_empty());
}

#[test]
fn a_held_notification_reads_back_as_written() {
    let mut n = held(7, Channel::WhatsApp);
    n.subscriber = Some("patient-7".into());
    let text = serde_json::to_string(&[n.clone(), held(8, Channel::InApp)]).unwrap();
    let back: Vec<HeldNotification> = serde_json::from_str(&text).unwrap();
    assert_eq!(back, vec![n, held(8, Channel::InApp)]);
}

#[test]
fn held_notifications_count_as_queued_until_the_job_is_cancelled() {
    let rows = vec![
        ("sent".to_owned(), 2),
        ("queued".to_owned(), 1),
        (String::new(), 5),
    ];
    assert_eq!(
        with_held(rows.clone(), "sending"),
        vec![("queued".to_owned(), 6), ("sent".to_owned(), 2)]
    );
    assert_eq!(
        with_held(rows, "cancelled"),
        vec![
            ("cancelled".to_owned(), 5),
            ("queued".to_owned(), 1),
            ("sent".to_owned(), 2)
        ]
    );
    assert!(with_held(vec![(String::new(), 0)], "sending").is_empty());
}

//! Invitations: the hierarchy, the token's life (email, validate, accept
//! once, resend, cancel, expiry), bulk answers per item, and hostile tokens.

use reqwest::Method;
use serde_json::{Value, json};
use testkit::TestApp;

use crate::http::org_support::{
    PASSWORD, WAIT, answer, answer_json, expect, login, platform_admin, request, request_json,
    token_for, user,
};

const INV: &str = "/api/v1/invitations";

async fn invite(app: &TestApp, token: &str, path: &str, body: Value) -> reqwest::Response {
    request_json(app, Method::POST, &format!("{INV}{path}"), token, &body).await
}

async fn accept(app: &TestApp, token: &str) -> reqwest::Response {
    app.post_anonymous(
        &format!("{INV}/accept/{token}"),
        &json!({"password": PASSWORD}),
    )
    .await
}

async fn valid(app: &TestApp, token: &str) -> bool {
    let v: Value = app
        .get_anonymous(&format!("{INV}/validate/{token}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        v.as_object().unwrap().len(),
        1,
        "validate reveals nothing else: {v}"
    );
    v["valid"].as_bool().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_hierarchy_decides_who_may_invite_whom() {
    let app = TestApp::spawn_api_only().await;
    let t = app.tenant_id;
    let admin = user(&app, t, "ADMIN", "admin@c.example").await;
    let chp = user(&app, t, "CHP_ADMIN", "chp@c.example").await;
    let master = user(&app, t, "MASTER_DISTRIBUTOR", "md@c.example").await;
    let dist = user(&app, t, "DISTRIBUTOR", "d@c.example").await;
    let sales = user(&app, t, "SALES", "s@c.example").await;
    let doctor = user(&app, t, "DOCTOR", "doc@c.example").await;
    let staff = user(&app, t, "MEDICAL_STAFF", "ms@c.example").await;
    let cases: Vec<(&str, &str, &str, Option<&str>, u16)> = vec![
        // The sales chain, one level down each.
        ("admin", &admin.token, "", Some("chp_admin"), 201),
        ("admin key", &app.api_key, "", Some("admin"), 201),
        ("chp admin", &chp.token, "", Some("master_distributor"), 201),
        (
            "master distributor",
            &master.token,
            "",
            Some("distributor"),
            201,
        ),
        ("distributor", &dist.token, "/sales", None, 201),
        ("sales", &sales.token, "/doctors", None, 201),
        (
            "doctor",
            &doctor.token,
            "/practice-staff",
            Some("office_admin"),
            201,
        ),
        ("doctor", &doctor.token, "/practice-staff", None, 201),
        // Anything else.
        ("admin", &admin.token, "/doctors", None, 403),
        ("chp admin", &chp.token, "", Some("distributor"), 403),
        (
            "distributor",
            &dist.token,
            "",
            Some("master_distributor"),
            403,
        ),
        ("sales", &sales.token, "/sales", None, 403),
        ("doctor", &doctor.token, "/doctors", None, 403),
        ("doctor", &doctor.token, "", Some("admin"), 403),
        ("medical staff", &staff.token, "/practice-staff", None, 403),
    ];
    for (n, (who, token, path, ty, status)) in cases.into_iter().enumerate() {
        let mut body = json!({"email": format!("invitee{n}@c.example")});
        if let Some(ty) = ty {
            body["invitation_type"] = json!(ty);
        }
        let resp = invite(&app, token, path, body).await;
        assert_eq!(resp.status().as_u16(), status, "{who} {path} {ty:?}");
    }
    let forbidden: i64 = sqlx::query_scalar(
        "select count(*) from audit_log where action = 'invitation.create' and result = 'failure'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(forbidden, 7, "each refusal is audited");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_accepted_invitation_creates_the_user_once_even_when_accepts_race() {
    let app = TestApp::builder().spawn().await;
    let root = platform_admin(&app).await;
    let (other, _) = app.other_tenant().await;
    // The platform admin invites the first admin of an organisation.
    let created = expect(
        invite(
            &app,
            &root.token,
            "",
            json!({"email": "first.admin@other.example",
            "invitation_type": "admin", "first_name": "Rae", "organization_id": other.to_string()}),
        )
        .await,
        201,
    )
    .await;
    assert_eq!(created["status"], "pending");
    let id = created["id"].as_str().unwrap().to_owned();
    let token = token_for(&app, "first.admin@other.example", 1).await;
    let shown = answer(&app, Method::GET, &format!("{INV}/{id}"), &root.token, 200).await;
    assert_eq!(shown["status"], "sent");
    assert!(shown["email_status"].is_string());
    let stored: Option<Vec<u8>> =
        sqlx::query_scalar("select token_hash from invitations where id = $1::uuid")
            .bind(&id)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(
        stored.unwrap(),
        <sha2::Sha256 as sha2::Digest>::digest(token.as_bytes()).to_vec(),
        "only the hash is stored"
    );
    assert!(valid(&app, &token).await);

    let racers = (0..8).map(|_| accept(&app, &token));
    let statuses: Vec<u16> = futures::future::join_all(racers)
        .await
        .into_iter()
        .map(|r| r.status().as_u16())
        .collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 201).count(),
        1,
        "{statuses:?}"
    );
    assert!(
        statuses.iter().all(|s| *s == 201 || *s == 409),
        "{statuses:?}"
    );
    let users: Vec<(String, String, String)> = sqlx::query_as(
        "select tenant_id::text, role, coalesce(first_name, '') from users where email = 'first.admin@other.example'",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(
        users,
        [(other.to_string(), "ADMIN".to_owned(), "Rae".to_owned())]
    );
    assert!(!valid(&app, &token).await);
    assert_eq!(accept(&app, &token).await.status(), 409);
    let session: Value = expect(
        login(&app, "first.admin@other.example", PASSWORD).await,
        200,
    )
    .await;
    assert_eq!(session["organization_id"], other.to_string());
    // No token reached the audit log.
    let leaked: i64 = sqlx::query_scalar("select count(*) from audit_log where details::text like '%' || $1 || '%' or coalesce(resource_id, '') = $1")
        .bind(&token)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(leaked, 0);
    let accepted: i64 = sqlx::query_scalar(
        "select count(*) from audit_log where action = 'invitation.accept' and result = 'success'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(accepted, 1);
    let refused: i64 = sqlx::query_scalar(
        "select count(*) from audit_log where action = 'invitation.accept' and result = 'failure' and actor = 'anonymous'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(refused, 8, "the seven losers and the late retry");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn resend_invalidates_the_old_token_and_cancelled_or_expired_ones_are_gone() {
    let app = TestApp::builder().spawn().await;
    let admin = user(&app, app.tenant_id, "ADMIN", "admin@c.example").await;
    let a = expect(
        invite(
            &app,
            &admin.token,
            "",
            json!({"email": "a@c.example", "invitation_type": "chp_admin"}),
        )
        .await,
        201,
    )
    .await;
    let a_id = a["id"].as_str().unwrap().to_owned();
    let first = token_for(&app, "a@c.example", 1).await;
    let resent = answer(
        &app,
        Method::POST,
        &format!("{INV}/{a_id}/resend"),
        &admin.token,
        200,
    )
    .await;
    // A woken worker may have sent the new email before the answer is read.
    assert!(
        resent["status"] == "pending" || resent["status"] == "sent",
        "{resent}"
    );
    let second = token_for(&app, "a@c.example", 2).await;
    assert_ne!(first, second);
    assert!(!valid(&app, &first).await);
    assert_eq!(
        accept(&app, &first).await.status(),
        404,
        "the old token is unknown now"
    );
    assert!(valid(&app, &second).await);

    // Cancelled: 410, and cancelling twice is a conflict.
    let cancel = request(&app, Method::DELETE, &format!("{INV}/{a_id}"), &admin.token).await;
    assert_eq!(cancel.status(), 204);
    assert!(!valid(&app, &second).await);
    let gone = expect(accept(&app, &second).await, 410).await;
    assert_eq!(gone["type"], "/problems/gone");
    assert_eq!(
        request(&app, Method::DELETE, &format!("{INV}/{a_id}"), &admin.token)
            .await
            .status(),
        409
    );

    // Expired: 410 at once, and the cron job marks it.
    let b = expect(
        invite(
            &app,
            &admin.token,
            "",
            json!({"email": "b@c.example", "invitation_type": "chp_admin", "expires_in_days": 1}),
        )
        .await,
        201,
    )
    .await;
    let b_id = b["id"].as_str().unwrap().to_owned();
    let token = token_for(&app, "b@c.example", 1).await;
    sqlx::query(
        "update invitations set expires_at = now() - interval '1 second' where id = $1::uuid",
    )
    .bind(&b_id)
    .execute(&app.pool)
    .await
    .unwrap();
    assert!(!valid(&app, &token).await);
    assert_eq!(accept(&app, &token).await.status(), 410);
    let expired = shared::db::invitations::expire(&app.pool, chrono::Utc::now())
        .await
        .unwrap();
    assert_eq!(expired, 1);
    let shown = answer(
        &app,
        Method::GET,
        &format!("{INV}/{b_id}"),
        &admin.token,
        200,
    )
    .await;
    assert_eq!(shown["status"], "expired");
    // An expired invitation may be sent again, with a new token.
    answer(
        &app,
        Method::POST,
        &format!("{INV}/{b_id}/resend"),
        &admin.token,
        200,
    )
    .await;
    let fresh = token_for(&app, "b@c.example", 2).await;
    assert_eq!(accept(&app, &fresh).await.status(), 201);
    let summary = answer(
        &app,
        Method::GET,
        &format!("{INV}/statistics/summary"),
        &admin.token,
        200,
    )
    .await;
    assert_eq!(summary["by_status"], json!({"accepted": 1, "cancelled": 1}));
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bulk_requests_answer_per_item() {
    let app = TestApp::spawn_api_only().await;
    let admin = user(&app, app.tenant_id, "ADMIN", "admin@c.example").await;
    let (other, _) = app.other_tenant().await;
    let body = json!({"invitations": [
        {"email": "ok1@c.example", "invitation_type": "chp_admin"},
        {"email": "not-an-address", "invitation_type": "chp_admin"},
        {"email": "doc@c.example", "invitation_type": "doctor"},
        {"email": "x@c.example", "invitation_type": "wizard"},
        {"email": "ok1@c.example", "invitation_type": "admin"},
        {"email": "y@c.example", "invitation_type": "admin", "organization_id": other.to_string()},
        {"email": "ok2@c.example", "invitation_type": "ivr_company"}
    ]});
    let result = expect(invite(&app, &admin.token, "/bulk", body).await, 207).await;
    let statuses: Vec<u64> = result["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].as_u64().unwrap())
        .collect();
    assert_eq!(statuses, [201, 400, 403, 400, 409, 404, 201]);
    assert_eq!(result["succeeded"], 2);
    assert_eq!(result["failed"], 5);
    let ids: Vec<String> = result["results"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["id"].as_str().map(str::to_owned))
        .collect();
    let cancel = answer_json(
        &app,
        Method::DELETE,
        &format!("{INV}/bulk/cancel"),
        &admin.token,
        &json!({"ids": [ids[0], "00000000-0000-0000-0000-000000000000", "junk", ids[0]]}),
        207,
    )
    .await;
    let statuses: Vec<u64> = cancel["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].as_u64().unwrap())
        .collect();
    assert_eq!(statuses, [200, 404, 404, 409]);
    let resend = answer_json(
        &app,
        Method::POST,
        &format!("{INV}/bulk/resend"),
        &admin.token,
        &json!({"ids": [ids[0], ids[1]]}),
        207,
    )
    .await;
    let statuses: Vec<u64> = resend["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].as_u64().unwrap())
        .collect();
    assert_eq!(statuses, [409, 200]);
    for (path, body) in [
        ("/bulk", json!({"invitations": []})),
        (
            "/bulk",
            json!({"invitations": vec![json!({"email": "a@c.example"}); 101]}),
        ),
        ("/bulk/resend", json!({"ids": []})),
    ] {
        assert_eq!(
            invite(&app, &admin.token, path, body).await.status(),
            400,
            "{path}"
        );
    }
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hostile_tokens_and_inputs_get_precise_answers() {
    let app = TestApp::spawn_api_only().await;
    let admin = user(&app, app.tenant_id, "ADMIN", "admin@c.example").await;
    let long = "A".repeat(5000);
    for token in [
        "short",
        "' or 1=1 --",
        long.as_str(),
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
    ] {
        assert!(!valid(&app, token).await, "{token}");
        let resp = accept(&app, token).await;
        assert_eq!(resp.status(), 404, "{token}");
        assert_eq!(resp.headers()["content-type"], "application/problem+json");
    }
    // A NUL in the token is refused at the edge, before any lookup, for
    // both: it says nothing about which tokens exist.
    for resp in [
        app.get_anonymous(&format!("{INV}/validate/%00")).await,
        accept(&app, "%00").await,
    ] {
        assert_eq!(resp.status(), 400);
        let p: Value = resp.json().await.unwrap();
        assert_eq!(p["invalid_params"][0]["name"], "path", "{p}");
    }
    for (body, field) in [
        (
            json!({"email": "nope", "invitation_type": "chp_admin"}),
            "email",
        ),
        (
            json!({"email": "a@c.example", "invitation_type": "emperor"}),
            "invitation_type",
        ),
        (json!({"email": "a@c.example"}), "invitation_type"),
        (
            json!({"email": "a@c.example", "invitation_type": "chp_admin", "first_name": "x".repeat(101)}),
            "first_name",
        ),
        (
            json!({"email": "a@c.example", "invitation_type": "chp_admin", "message": "x".repeat(2001)}),
            "message",
        ),
        (
            json!({"email": "a@c.example", "invitation_type": "chp_admin", "expires_in_days": 0}),
            "expires_in_days",
        ),
        (
            json!({"email": "a@c.example", "invitation_type": "chp_admin", "expires_in_days": 31}),
            "expires_in_days",
        ),
    ] {
        let problem = expect(invite(&app, &admin.token, "", body).await, 400).await;
        assert_eq!(problem["invalid_params"][0]["name"], field, "{problem}");
    }
    let on_doctors = expect(
        invite(
            &app,
            &admin.token,
            "/doctors",
            json!({"email": "a@c.example", "invitation_type": "sales"}),
        )
        .await,
        400,
    )
    .await;
    assert_eq!(on_doctors["invalid_params"][0]["name"], "invitation_type");
    let count: i64 = sqlx::query_scalar("select count(*) from invitations")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(count, 0);
    // Another organisation's invitation does not exist for this admin.
    let (other, other_key) = app.other_tenant().await;
    let theirs = expect(
        app.post_with_token(
            INV,
            &other_key,
            &json!({"email": "z@o.example", "invitation_type": "chp_admin"}),
        )
        .await,
        201,
    )
    .await;
    let id = theirs["id"].as_str().unwrap();
    assert_eq!(theirs["organization_id"], other.to_string());
    for (method, path) in [
        (Method::GET, format!("{INV}/{id}")),
        (Method::PUT, format!("{INV}/{id}")),
        (Method::DELETE, format!("{INV}/{id}")),
        (Method::POST, format!("{INV}/{id}/resend")),
    ] {
        let resp = request_json(&app, method.clone(), &path, &admin.token, &json!({})).await;
        assert_eq!(resp.status(), 404, "{method} {path}");
    }
    let mine = answer(&app, Method::GET, INV, &admin.token, 200).await;
    assert!(mine["items"].as_array().unwrap().is_empty());
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_invitation_whose_email_failed_shows_failed_and_can_be_resent() {
    let app = TestApp::builder().spawn().await;
    let admin = user(&app, app.tenant_id, "ADMIN", "admin@c.example").await;
    let created = expect(
        invite(
            &app,
            &admin.token,
            "",
            json!({"email": "lost@c.example", "invitation_type": "chp_admin"}),
        )
        .await,
        201,
    )
    .await;
    let id = created["id"].as_str().unwrap().to_owned();
    token_for(&app, "lost@c.example", 1).await;
    let shown = testkit::eventually("the email's status", WAIT, || async {
        let v = answer(&app, Method::GET, &format!("{INV}/{id}"), &admin.token, 200).await;
        (v["email_status"] == "sent").then_some(v)
    })
    .await;
    assert_eq!(shown["status"], "sent");
    // The provider reports a bounce.
    sqlx::query("update notifications set status = 'bounced' where id = (select notification_id from invitations where id = $1::uuid)")
        .bind(&id)
        .execute(&app.pool)
        .await
        .unwrap();
    let shown = answer(&app, Method::GET, &format!("{INV}/{id}"), &admin.token, 200).await;
    assert_eq!(shown["status"], "failed");
    assert_eq!(shown["email_status"], "bounced");
    let failed = answer(
        &app,
        Method::GET,
        &format!("{INV}?status=failed"),
        &admin.token,
        200,
    )
    .await;
    assert_eq!(failed["items"].as_array().unwrap().len(), 1);
    answer(
        &app,
        Method::POST,
        &format!("{INV}/{id}/resend"),
        &admin.token,
        200,
    )
    .await;
    token_for(&app, "lost@c.example", 2).await;
    let shown = answer(&app, Method::GET, &format!("{INV}/{id}"), &admin.token, 200).await;
    assert_eq!(shown["send_count"], 2);
    app.shutdown().await;
}

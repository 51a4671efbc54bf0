//! Row-level security, the wall behind the tenant filters: every table with
//! a tenant column, read from the catalogue at test time (so a new table
//! without a policy fails here), shows a tenant scope only its own rows and
//! refuses to write another organisation's; the pool never bypasses it; and
//! the API walls each request to its caller's organisation.

use secrecy::ExposeSecret;
use serde_json::json;
use shared::{db::scope, domain::TenantId};
use sqlx::{Connection, Executor, PgConnection, PgPool, Row};
use testkit::{TestApp, db::TestDb};

/// Tables whose rows without an organisation (built-ins) every
/// organisation may read; any other table shows a tenant none of them.
const SHARED_READ: &[&str] = &["permission_sets"];

/// A tenant-owned table: its name and the column naming the organisation.
#[derive(Debug)]
struct Owned {
    table: String,
    column: String,
}

/// Every table in `public` with a `tenant_id` or `organization_id` column.
async fn tenant_tables(db: &mut PgConnection) -> Vec<Owned> {
    sqlx::query(
        "select c.relname::text as t, a.attname::text as col
         from pg_class c
         join pg_namespace n on n.oid = c.relnamespace
         join pg_attribute a on a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped
         where n.nspname = 'public' and c.relkind in ('r', 'p')
           and a.attname in ('tenant_id', 'organization_id')
         order by 1",
    )
    .fetch_all(db)
    .await
    .unwrap()
    .into_iter()
    .map(|r| Owned {
        table: r.get("t"),
        column: r.get("col"),
    })
    .collect()
}

/// An `insert` of one row of `t` for organisation `$1`: every other column
/// without a default gets a fresh value of its type.
async fn insert_sql(db: &mut PgConnection, t: &Owned) -> String {
    let rows = sqlx::query(
        "select a.attname::text as name, format_type(a.atttypid, a.atttypmod) as ty,
                ty.typcategory::text as cat,
                (select e.enumlabel::text from pg_enum e
                 where e.enumtypid = a.atttypid order by e.enumsortorder limit 1) as first_label
         from pg_attribute a
         join pg_type ty on ty.oid = a.atttypid
         where a.attrelid = $1::regclass and a.attnum > 0 and not a.attisdropped
           and a.attnotnull and not a.atthasdef and a.attidentity = '' and a.attgenerated = ''
           and a.attname <> $2
         order by a.attnum",
    )
    .bind(&t.table)
    .bind(&t.column)
    .fetch_all(db)
    .await
    .unwrap();
    let mut columns = vec![t.column.clone()];
    let mut values = vec!["$1".to_owned()];
    for r in rows {
        let name: String = r.get("name");
        let ty: String = r.get("ty");
        let cat: String = r.get("cat");
        let label: Option<String> = r.get("first_label");
        let value = match (cat.as_str(), ty.as_str()) {
            ("E", _) => format!("'{}'", label.expect("an enum has labels")),
            ("A", _) => "'{}'".to_owned(),
            ("B", _) => "false".to_owned(),
            ("N", _) => "floor(random() * 30000)".to_owned(),
            ("D", _) => "now() - random() * interval '1000 days'".to_owned(),
            ("T", _) => "interval '1 hour'".to_owned(),
            ("I", _) => "'10.0.0.1'".to_owned(),
            (_, "uuid") => "gen_random_uuid()".to_owned(),
            (_, "jsonb" | "json") => "'{}'".to_owned(),
            (_, "bytea") => "decode(md5(random()::text), 'hex')".to_owned(),
            _ => "md5(random()::text)".to_owned(),
        };
        columns.push(format!("\"{name}\""));
        values.push(format!("({value})::{ty}"));
    }
    format!(
        "insert into \"{}\" ({}) values ({})",
        t.table,
        columns.join(", "),
        values.join(", ")
    )
}

/// Two organisations on a superuser connection to `db`.
async fn two_tenants(owner: &mut PgConnection) -> (TenantId, TenantId) {
    let a = shared::db::tenants::create(&mut *owner, "Clinic A")
        .await
        .unwrap();
    let b = shared::db::tenants::create(&mut *owner, "Clinic B")
        .await
        .unwrap();
    (a.id, b.id)
}

/// Lets `owner` write one generic row into any table of a database that is
/// thrown away: every CHECK constraint is dropped, and the session skips
/// foreign keys and triggers.
async fn accept_generic_rows(owner: &mut PgConnection) {
    let checks: Vec<(String, String)> = sqlx::query_as(
        "select c.conrelid::regclass::text, c.conname::text from pg_constraint c
         join pg_namespace n on n.oid = c.connamespace
         where n.nspname = 'public' and c.contype = 'c'",
    )
    .fetch_all(&mut *owner)
    .await
    .unwrap();
    for (table, constraint) in checks {
        owner
            .execute(format!("alter table {table} drop constraint \"{constraint}\"").as_str())
            .await
            .unwrap();
    }
    owner
        .execute("set session_replication_role = replica")
        .await
        .unwrap();
}

/// Every row of `table` the pool's scope shows.
async fn count(pool: &PgPool, table: &str) -> i64 {
    sqlx::query_scalar(&format!("select count(*) from \"{table}\""))
        .fetch_one(pool)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_tenant_table_shows_a_tenant_scope_its_own_rows_only_and_refuses_anothers() {
    let db = TestDb::new().await;
    let mut owner = PgConnection::connect(&db.url).await.unwrap();
    let (a, b) = two_tenants(&mut owner).await;
    let tables = tenant_tables(&mut owner).await;
    assert!(
        tables.len() >= 50,
        "found only {} tenant tables",
        tables.len()
    );

    // This database is thrown away (see [`accept_generic_rows`]).
    accept_generic_rows(&mut owner).await;
    let mut inserts = Vec::new();
    for t in &tables {
        let sql = insert_sql(&mut owner, t).await;
        for tenant in [a, b] {
            sqlx::query(&sql)
                .bind(tenant)
                .execute(&mut owner)
                .await
                .unwrap_or_else(|e| panic!("seeding {}: {e}\n{sql}", t.table));
        }
        inserts.push(sql);
    }

    let pool = shared::db::connect_url(&db.url, 2, scope::Fallback::Platform("test"))
        .await
        .unwrap();
    let mut unwalled = Vec::new();
    for (t, sql) in tables.iter().zip(&inserts) {
        let forced: (bool, bool) = sqlx::query_as(
            "select relrowsecurity, relforcerowsecurity from pg_class where oid = $1::regclass",
        )
        .bind(&t.table)
        .fetch_one(&pool)
        .await
        .unwrap();
        let everyone = scope::platform("test", count(&pool, &t.table)).await;
        // No tenant filter: the rows A's scope returns are classified after.
        let (total, own, shared): (i64, i64, i64) = scope::tenant(a, async {
            sqlx::query_as(&format!(
                "select count(*), count(*) filter (where {col} = $1),
                        count(*) filter (where {col} is null)
                 from \"{}\"",
                t.table,
                col = t.column
            ))
            .bind(a)
            .fetch_one(&pool)
            .await
            .unwrap()
        })
        .await;
        let shared_allowed = SHARED_READ.contains(&t.table.as_str());
        let others = scope::tenant(b, async {
            sqlx::query_scalar::<_, i64>(&format!(
                "select count(*) from \"{}\" where {} = $1",
                t.table, t.column
            ))
            .bind(a)
            .fetch_one(&pool)
            .await
            .unwrap()
        })
        .await;
        let foreign_insert = scope::tenant(a, sqlx::query(sql).bind(b).execute(&pool)).await;
        let refused = matches!(
            &foreign_insert,
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42501")
        );
        if forced != (true, true)
            || everyone < 2
            || own != 1
            || total != own + shared
            || (shared > 0 && !shared_allowed)
            || others != 0
            || !refused
        {
            unwalled.push(format!(
                "{}: rls/force {forced:?}, platform sees {everyone}, A sees {total} \
                 ({own} of A's, {shared} shared), B sees {others} of A's, \
                 B's row in A's scope: {foreign_insert:?}",
                t.table
            ));
        }
    }
    assert!(unwalled.is_empty(), "not walled:\n{}", unwalled.join("\n"));
    pool.close().await;
    db.drop_now().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pool_acts_as_a_role_that_owns_nothing_and_cannot_bypass_the_wall() {
    let db = TestDb::new().await;
    let pool = shared::db::connect_url(&db.url, 2, scope::Fallback::Platform("test"))
        .await
        .unwrap();
    let (user, bypasses, owns): (String, bool, i64) = sqlx::query_as(
        "select current_user::text, r.rolsuper or r.rolbypassrls,
                (select count(*) from pg_class c where c.relowner = r.oid)
         from pg_roles r where r.rolname = current_user",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(user, shared::db::APP_ROLE);
    assert!(!bypasses);
    assert_eq!(owns, 0);

    // The setting follows the scope of whoever acquires the connection,
    // including a connection that was last used in another scope.
    let t = TenantId::new();
    let setting = || async {
        sqlx::query_scalar::<_, String>("select current_setting('app.tenant_id')")
            .fetch_one(&pool)
            .await
            .unwrap()
    };
    assert_eq!(scope::tenant(t, setting()).await, t.to_string());
    assert_eq!(setting().await, "platform");
    assert_eq!(scope::tenant(t, setting()).await, t.to_string());

    // A session of the role with no scope at all sees nothing.
    let mut bare = PgConnection::connect(&db.url).await.unwrap();
    let mut owner = PgConnection::connect(&db.url).await.unwrap();
    let clinic = shared::db::tenants::create(&mut owner, "Clinic")
        .await
        .unwrap();
    shared::db::api_keys::create(&mut owner, clinic.id, "k")
        .await
        .unwrap();
    bare.execute("set role notify_app").await.unwrap();
    let seen: i64 = sqlx::query_scalar("select count(*) from api_keys")
        .fetch_one(&mut bare)
        .await
        .unwrap();
    assert_eq!(seen, 0);
    bare.execute("select set_config('app.tenant_id', 'not-a-uuid', false)")
        .await
        .unwrap();
    let seen: i64 = sqlx::query_scalar("select count(*) from api_keys")
        .fetch_one(&mut bare)
        .await
        .unwrap();
    assert_eq!(seen, 0);
    pool.close().await;
    db.drop_now().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_view_reads_with_the_callers_rights() {
    let db = TestDb::new().await;
    let mut owner = PgConnection::connect(&db.url).await.unwrap();
    let definers: Vec<String> = sqlx::query_scalar(
        "select c.relname::text from pg_class c join pg_namespace n on n.oid = c.relnamespace
         where n.nspname = 'public' and c.relkind in ('v', 'm')
           and coalesce(array_to_string(c.reloptions, ',') !~ 'security_invoker=(true|on|1)', true)",
    )
    .fetch_all(&mut owner)
    .await
    .unwrap();
    assert!(
        definers.is_empty(),
        "views that bypass the wall: {definers:?}"
    );
    db.drop_now().await;
}

/// Records, for every row inserted into `table`, the scope and role of the
/// session that inserted it.
async fn probe(owner: &mut PgConnection, table: &str) {
    owner
        .execute(
            "create table if not exists rls_probe (id serial primary key, tbl text, scope text, usr text);
             grant insert on rls_probe to notify_app;
             grant usage on sequence rls_probe_id_seq to notify_app;
             create or replace function rls_probe() returns trigger language plpgsql as $$
             begin
                 insert into rls_probe (tbl, scope, usr)
                 values (tg_table_name, current_setting('app.tenant_id', true), current_user);
                 return null;
             end $$;",
        )
        .await
        .unwrap();
    owner
        .execute(
            format!(
                "create trigger rls_probe after insert on {table}
                 for each row execute function rls_probe()"
            )
            .as_str(),
        )
        .await
        .unwrap();
}

async fn probed(owner: &mut PgConnection, table: &str) -> Vec<(String, String)> {
    sqlx::query_as("select scope, usr from rls_probe where tbl = $1 order by id")
        .bind(table)
        .fetch_all(owner)
        .await
        .unwrap()
}

fn template(key: &str) -> serde_json::Value {
    json!({
        "key": key,
        "name": "Reminder",
        "default_locale": "en",
        "default_channels": ["sms"],
        "locales": {"en": {"sms": {"body": "Hello {{name}}"}}}
    })
}

async fn create_template(app: &TestApp, key: &str, token: &str) -> reqwest::Response {
    app.post_with_token("/api/v1/admin/templates", token, &template(key))
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_request_runs_walled_to_its_callers_organisation_and_the_platform_in_platform_scope() {
    let app = TestApp::spawn_api_only().await;
    let url = app.settings.database_url.expose_secret().to_owned();
    let mut owner = PgConnection::connect(&url).await.unwrap();
    probe(&mut owner, "templates").await;

    let resp = create_template(&app, "walled", &app.api_key).await;
    assert_eq!(resp.status(), 201, "{:?}", resp.text().await);
    assert_eq!(
        probed(&mut owner, "templates").await,
        vec![(app.tenant_id.to_string(), shared::db::APP_ROLE.to_owned())]
    );

    // The platform organisation's key administers every organisation.
    let (platform, platform_key) = app.other_tenant().await;
    sqlx::query("update tenants set type = 'platform' where id = $1")
        .bind(platform)
        .execute(&mut owner)
        .await
        .unwrap();
    let resp = create_template(&app, "platform", &platform_key).await;
    assert_eq!(resp.status(), 201, "{:?}", resp.text().await);
    let seen = probed(&mut owner, "templates").await;
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[1].0, scope::PLATFORM);
    assert_eq!(scope::current(), None);
    app.shutdown().await;
}

/// Tables without an organisation column, walled through the row they
/// belong to: `(table, column naming the parent, parent table)`.
const CHILDREN: &[(&str, &str, &str)] = &[
    ("bulk_parts", "job_id", "bulk_jobs"),
    ("bulk_row_errors", "job_id", "bulk_jobs"),
    ("refresh_tokens", "session_id", "auth_sessions"),
    ("permission_set_includes", "set_id", "permission_sets"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_without_an_organisation_column_are_walled_through_their_parent() {
    let db = TestDb::new().await;
    let mut owner = PgConnection::connect(&db.url).await.unwrap();
    let (a, b) = two_tenants(&mut owner).await;
    accept_generic_rows(&mut owner).await;
    let pool = shared::db::connect_url(&db.url, 2, scope::Fallback::Platform("test"))
        .await
        .unwrap();
    for &(child, fk, parent) in CHILDREN {
        let parent_sql = insert_sql(
            &mut owner,
            &Owned {
                table: parent.into(),
                column: "tenant_id".into(),
            },
        )
        .await
            + " returning id";
        let child_sql = insert_sql(
            &mut owner,
            &Owned {
                table: child.into(),
                column: fk.into(),
            },
        )
        .await;
        let mut parents = Vec::new();
        for tenant in [a, b] {
            let id: uuid::Uuid = sqlx::query_scalar(&parent_sql)
                .bind(tenant)
                .fetch_one(&mut owner)
                .await
                .unwrap_or_else(|e| panic!("seeding {parent}: {e}"));
            sqlx::query(&child_sql)
                .bind(id)
                .execute(&mut owner)
                .await
                .unwrap_or_else(|e| panic!("seeding {child}: {e}\n{child_sql}"));
            parents.push(id);
        }
        let (of_a, of_b) = (parents[0], parents[1]);
        let seen = |tenant: TenantId| {
            let pool = pool.clone();
            scope::tenant(tenant, async move {
                sqlx::query_as::<_, (i64, i64)>(&format!(
                    "select count(*) filter (where {fk} = $1), count(*) filter (where {fk} = $2)
                     from \"{child}\""
                ))
                .bind(of_a)
                .bind(of_b)
                .fetch_one(&pool)
                .await
                .unwrap()
            })
        };
        assert_eq!(seen(a).await, (1, 0), "{child} in A's scope");
        assert_eq!(seen(b).await, (0, 1), "{child} in B's scope");
        let everyone = scope::platform("test", async {
            sqlx::query_scalar::<_, i64>(&format!(
                "select count(*) from \"{child}\" where {fk} = any($1)"
            ))
            .bind([of_a, of_b])
            .fetch_one(&pool)
            .await
            .unwrap()
        })
        .await;
        assert_eq!(everyone, 2, "{child} in platform scope");
        // A's scope may not write a row under B's parent.
        let written = scope::tenant(a, async {
            sqlx::query(&child_sql).bind(of_b).execute(&pool).await
        })
        .await;
        let refused = written.expect_err(&format!(
            "{child}: a row under another organisation's parent"
        ));
        assert!(
            refused.to_string().contains("row-level security"),
            "{child}: {refused}"
        );
    }
}

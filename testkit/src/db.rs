//! A fresh database per test, cloned from a template that holds the current
//! migrations (cloning takes milliseconds; migrating would take longer).

use sha2::{Digest, Sha256};
use sqlx::{Connection, Executor, PgConnection, PgPool};

/// One test's database; dropped with [`TestDb::drop_now`] or when the value
/// goes away.
#[derive(Debug)]
pub struct TestDb {
    /// The database's name.
    pub name: String,
    /// Its URL.
    pub url: String,
}

fn template_name() -> String {
    let mut h = Sha256::new();
    for m in shared::db::MIGRATOR.iter() {
        h.update(m.version.to_le_bytes());
        h.update(&*m.checksum);
    }
    let digest = h.finalize();
    format!(
        "notify_tpl_{}",
        digest
            .iter()
            .take(6)
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    )
}

async fn admin_connection() -> PgConnection {
    PgConnection::connect(&format!("{}/postgres", crate::postgres_server_url()))
        .await
        .expect("Postgres must be running for the tests (see README)")
}

impl TestDb {
    /// Creates a database with the current schema.
    pub async fn new() -> Self {
        let template = template_name();
        let mut admin = admin_connection().await;
        // One test process builds the template; the others wait for it.
        admin
            .execute("select pg_advisory_lock(727274)")
            .await
            .expect("advisory lock");
        let exists: bool =
            sqlx::query_scalar("select exists(select 1 from pg_database where datname = $1)")
                .bind(&template)
                .fetch_one(&mut admin)
                .await
                .expect("template lookup");
        if !exists {
            let building = format!("{template}_building");
            admin
                .execute(format!("drop database if exists {building} with (force)").as_str())
                .await
                .unwrap();
            admin
                .execute(format!("create database {building}").as_str())
                .await
                .unwrap();
            let url = format!("{}/{building}", crate::postgres_server_url());
            let pool = PgPool::connect(&url).await.expect("template connection");
            shared::db::migrate(&pool)
                .await
                .expect("migrations apply to the template");
            pool.close().await;
            sqlx::query(
                "select pg_terminate_backend(pid) from pg_stat_activity where datname = $1",
            )
            .bind(&building)
            .execute(&mut admin)
            .await
            .unwrap();
            admin
                .execute(format!("alter database {building} rename to {template}").as_str())
                .await
                .unwrap();
        }
        admin
            .execute("select pg_advisory_unlock(727274)")
            .await
            .expect("advisory unlock");
        let name = format!("notify_t_{}", uuid::Uuid::new_v4().simple());
        admin
            .execute(format!("create database {name} template {template}").as_str())
            .await
            .expect("clone the template");
        let url = format!("{}/{name}", crate::postgres_server_url());
        Self { name, url }
    }

    /// A connection as the tests' login role (a superuser that owns the
    /// tables), without the app role the platform's pool acts as, and so
    /// outside row-level security: for fixtures that change the schema or
    /// its statistics, or must see every row whatever the scope.
    pub async fn owner(&self) -> PgConnection {
        PgConnection::connect(&self.url)
            .await
            .expect("an owner connection to the test database")
    }

    /// Drops the database, closing whatever is still connected.
    pub async fn drop_now(&self) {
        let mut admin = admin_connection().await;
        let _ = admin
            .execute(format!("drop database if exists {} with (force)", self.name).as_str())
            .await;
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async {
                if let Ok(mut admin) =
                    PgConnection::connect(&format!("{}/postgres", crate::postgres_server_url()))
                        .await
                {
                    let _ = admin
                        .execute(format!("drop database if exists {name} with (force)").as_str())
                        .await;
                }
            });
        })
        .join();
    }
}

//! The subcommands besides `serve`.

use crate::{
    auth::{KeySet, Passwords},
    cli::{CommonArgs, KeysCmd, UserCmd},
    config::Config,
    domain::{DisplayName, Email, NewPassword},
    startup::open_db,
    store::{AuditVerdict, Creator, Db, NewUser, StoreError},
};
use anyhow::{Context as _, bail};
use secrecy::SecretString;
use std::io::BufRead as _;

async fn migrated_db(common: &CommonArgs) -> anyhow::Result<(Config, Db)> {
    let config = Config::load(common, None)?;
    let db = open_db(&config).await?;
    db.migrate().await?;
    Ok((config, db))
}

/// `alcove migrate`.
pub async fn migrate(common: &CommonArgs) -> anyhow::Result<()> {
    let (_, db) = migrated_db(common).await?;
    let r = db.readiness().await;
    println!(
        "migrations applied: database at version {}",
        r.applied_migration.unwrap_or_default()
    );
    db.close().await;
    Ok(())
}

/// Read one line (the password) from standard input, without its line ending.
fn read_password() -> anyhow::Result<SecretString> {
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("reading the password from standard input")?;
    let trimmed = line.trim_end_matches(['\n', '\r']).to_owned();
    if trimmed.is_empty() {
        bail!(
            "no password on standard input (pipe it in, e.g. `read -rs P && printf '%s\\n' \"$P\" | alcove user create …`)"
        );
    }
    Ok(SecretString::from(trimmed))
}

/// `alcove user …`.
pub async fn user(cmd: UserCmd) -> anyhow::Result<()> {
    match cmd {
        UserCmd::Create {
            common,
            email,
            name,
            role,
        } => {
            let email = Email::parse(&email).map_err(|e| anyhow::anyhow!("--email: {e}"))?;
            let name = DisplayName::parse(&name).map_err(|e| anyhow::anyhow!("--name: {e}"))?;
            let password = NewPassword::parse(read_password()?, Some(&email))
                .map_err(|e| anyhow::anyhow!("password: {e}"))?;
            let (_, db) = migrated_db(&common).await?;
            let hash = Passwords::new().await?.hash(password.secret()).await?;
            let user = db
                .create_user(
                    NewUser {
                        email,
                        display_name: name,
                        role,
                        password_hash: hash,
                    },
                    Creator::Cli,
                )
                .await
                .map_err(|e| match e {
                    StoreError::Conflict(_) => {
                        anyhow::anyhow!("--email: an account with this email already exists")
                    }
                    other => other.into(),
                })?;
            println!(
                "created {} account {} ({})",
                user.role(),
                user.id,
                user.email
            );
            db.close().await;
        }
        UserCmd::SetPassword { common, email } => {
            let email = Email::parse(&email).map_err(|e| anyhow::anyhow!("--email: {e}"))?;
            let password = NewPassword::parse(read_password()?, Some(&email))
                .map_err(|e| anyhow::anyhow!("password: {e}"))?;
            let (_, db) = migrated_db(&common).await?;
            let user = db
                .user_by_email(&email)
                .await?
                .context("--email: no account with this email")?;
            let hash = Passwords::new().await?.hash(password.secret()).await?;
            let revoked = db
                .set_password_hash(user.user.id, &hash, None, None)
                .await?;
            println!(
                "password set for {}; {} sign-in(s) ended{}",
                user.user.id,
                revoked.sign_ins,
                if revoked.calendar_feed {
                    "; its calendar feed URL no longer works (the person can make a new one)"
                } else {
                    ""
                }
            );
            db.close().await;
        }
        UserCmd::List { common, role, json } => {
            let (_, db) = migrated_db(&common).await?;
            let mut offset = 0;
            let mut rows = Vec::new();
            loop {
                let (page, total) = db.list_users(role, 500, offset).await?;
                offset += page.len() as i64;
                let done = page.is_empty() || offset >= total;
                rows.extend(page);
                if done {
                    break;
                }
            }
            db.close().await;
            let state = |u: &crate::store::User| if u.disabled { "disabled" } else { "active" };
            if json {
                for u in &rows {
                    println!(
                        "{}",
                        serde_json::json!({
                            "id": u.id,
                            "role": u.role().as_str(),
                            "state": state(u),
                            "created_at": u.created_at.get().to_string(),
                            "email": u.email,
                            "display_name": u.display_name,
                        })
                    );
                }
            } else {
                println!(
                    "{:<36}  {:<9}  {:<8}  {:<20}  {:<32}  NAME",
                    "ID", "ROLE", "STATE", "CREATED", "EMAIL"
                );
                for u in &rows {
                    let created = u
                        .created_at
                        .get()
                        .strftime("%Y-%m-%d %H:%M UTC")
                        .to_string();
                    println!(
                        "{:<36}  {:<9}  {:<8}  {:<20}  {:<32}  {}",
                        u.id,
                        u.role().as_str(),
                        state(u),
                        created,
                        u.email,
                        u.display_name
                    );
                }
                eprintln!("{} account(s)", rows.len());
            }
        }
        UserCmd::Disable { common, email } => set_disabled(&common, &email, true).await?,
        UserCmd::Enable { common, email } => set_disabled(&common, &email, false).await?,
    }
    Ok(())
}

async fn set_disabled(common: &CommonArgs, email: &str, disabled: bool) -> anyhow::Result<()> {
    let email = Email::parse(email).map_err(|e| anyhow::anyhow!("--email: {e}"))?;
    let (_, db) = migrated_db(common).await?;
    let user = db
        .user_by_email(&email)
        .await?
        .context("--email: no account with this email")?;
    db.set_user_disabled(user.user.id, disabled, None).await?;
    let what = if disabled {
        "disabled; its sign-ins have ended"
    } else {
        "enabled"
    };
    println!("account {} {what}", user.user.id);
    db.close().await;
    Ok(())
}

/// `alcove keys …`.
pub fn keys(cmd: KeysCmd) -> anyhow::Result<()> {
    match cmd {
        KeysCmd::Rotate(common) => {
            let config = Config::load(&common, None)?;
            let kid = KeySet::rotate(&config.keys_dir())?;
            println!("new signing key {kid} is current; restart the server(s) to use it");
        }
        KeysCmd::Generate => {
            print!("{}", KeySet::generate_pem()?);
        }
        KeysCmd::List(common) => {
            let config = Config::load(&common, None)?;
            let keys = KeySet::load(&config.keys_dir())?;
            for kid in keys.kids() {
                let mark = if kid == keys.current_kid() {
                    " (current)"
                } else {
                    ""
                };
                println!("{kid}{mark}");
            }
        }
    }
    Ok(())
}

/// `alcove audit verify`.
pub async fn audit_verify(common: &CommonArgs) -> anyhow::Result<()> {
    let (_, db) = migrated_db(common).await?;
    let verdict = db.verify_audit().await?;
    db.close().await;
    match verdict {
        AuditVerdict::Intact { rows, head } => {
            println!("audit trail intact: {rows} entries, chain head at {head}");
            Ok(())
        }
        AuditVerdict::Broken { seq, why } => {
            bail!("audit trail broken at entry {seq}: {why}")
        }
    }
}

/// `alcove config check`: the effective configuration, secrets masked.
pub fn config_check(cmd: &crate::cli::ServeCmd) -> anyhow::Result<()> {
    let config = Config::load(&cmd.common, Some(&cmd.serve))?;
    let mut v = serde_json::to_value(&config).context("serialising the configuration")?;
    let obj = v.as_object_mut().expect("an object");
    let set = |present: bool| serde_json::json!(if present { "(set, hidden)" } else { "(none)" });
    obj.insert(
        "database_url".into(),
        serde_json::json!(config.database_url.as_ref().map_or_else(
            || format!(
                "sqlite://{} (default)",
                crate::config::display_path(&config.default_sqlite_path())
            ),
            |u| u.redacted()
        )),
    );
    obj.insert(
        "redis_url".into(),
        config
            .redis_url
            .as_ref()
            .map_or(serde_json::Value::Null, |u| serde_json::json!(u.redacted())),
    );
    obj.insert("turn_secret".into(), set(config.turn_secret.is_some()));
    obj.insert(
        "smtp_url".into(),
        config
            .smtp_url
            .as_ref()
            .map_or(serde_json::Value::Null, |u| {
                use secrecy::ExposeSecret as _;
                serde_json::json!(crate::mail::redacted(u.expose_secret()))
            }),
    );
    obj.insert(
        "webhook_secret".into(),
        set(config.webhook_secret.is_some()),
    );
    obj.insert("signing_keys".into(), set(config.signing_keys.is_some()));
    let mut keys: Vec<&String> = obj.keys().collect();
    keys.sort();
    println!("# the configuration is valid; effective values (secrets hidden):");
    for k in keys {
        let value = match &obj[k] {
            serde_json::Value::Null => "(none)".to_owned(),
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        println!("{k} = {value}");
    }
    Ok(())
}

/// `alcove backup`: a consistent copy of the SQLite database (`VACUUM INTO`), made while
/// the server may be running, then checked.
pub async fn backup(common: &CommonArgs, to: &std::path::Path) -> anyhow::Result<()> {
    let config = Config::load(common, None)?;
    if to.exists() {
        bail!("--to: {} exists already; give a new file", to.display());
    }
    let db = open_db(&config).await?;
    let Db::Sqlite(pool) = &db else {
        db.close().await;
        bail!(
            "the database is PostgreSQL: back it up with its own tools (pg_dump, or continuous archiving); see deploy/README.md"
        );
    };
    let target = to
        .to_str()
        .context("--to: the path must be valid UTF-8")?
        .to_owned();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "VACUUM INTO '{}'",
        target.replace('\'', "''")
    )))
    .execute(pool)
    .await
    .with_context(|| format!("writing the copy to {}", to.display()))?;
    db.close().await;
    // The copy opens and is whole.
    let copy = sqlx::SqlitePool::connect(&format!("sqlite://{target}?mode=ro"))
        .await
        .context("opening the copy")?;
    let check: String = sqlx::query_scalar("PRAGMA integrity_check")
        .fetch_one(&copy)
        .await?;
    let accounts: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users")
        .fetch_one(&copy)
        .await?;
    copy.close().await;
    if check != "ok" {
        bail!("the copy failed its integrity check: {check}");
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o600))?;
    }
    println!(
        "backed up to {} ({accounts} accounts, integrity ok); keep a copy of {} with it: the signing keys",
        to.display(),
        crate::config::display_path(&config.keys_dir())
    );
    Ok(())
}

/// `alcove healthcheck`: GET this server's `/healthz` (or `--url`), 200 within 3 s or fail.
pub async fn healthcheck(cmd: &crate::cli::HealthcheckCmd) -> anyhow::Result<()> {
    let url = match &cmd.url {
        Some(u) => u.clone(),
        None => {
            let config = Config::load(&cmd.serve.common, Some(&cmd.serve.serve))?;
            let mut addr = config.listen;
            if addr.ip().is_unspecified() {
                addr.set_ip(if addr.is_ipv4() {
                    std::net::Ipv4Addr::LOCALHOST.into()
                } else {
                    std::net::Ipv6Addr::LOCALHOST.into()
                });
            }
            format!("http://{addr}/healthz")
        }
    };
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(3))
        .build()?;
    let status = client
        .get(&url)
        .send()
        .await
        .with_context(|| format!("{url} does not answer"))?
        .status();
    if !status.is_success() {
        bail!("{url} answered {status}");
    }
    println!("{url}: {status}");
    Ok(())
}

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

//! The open-files limit: raised at start to the hard limit, so connections, watches, spool files
//! and the pipes of many runs at once do not run out of file descriptors at the common soft
//! default of 1,024 (the gateway alone may hold `--max-connections` 1,024 connections). The
//! systemd units also set `LimitNOFILE`.

use nix::sys::resource::{getrlimit, setrlimit, Resource};

/// Raises the soft open-files limit to the hard one; returns the limit before and after.
pub fn raise_open_files_limit() -> Result<(u64, u64), nix::Error> {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
    }
    Ok((soft, hard.max(soft)))
}

/// [`raise_open_files_limit`], logged: the new limit, or why it stays.
pub fn raise_open_files_limit_logged() {
    match raise_open_files_limit() {
        Ok((before, after)) if before != after => {
            tracing::info!(before, after, "open-files limit raised");
        }
        Ok((limit, _)) => tracing::debug!(limit, "open-files limit"),
        Err(e) => tracing::warn!(error = %e, "cannot raise the open-files limit"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_soft_limit_ends_at_the_hard_one() -> Result<(), nix::Error> {
        let (_, after) = raise_open_files_limit()?;
        let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
        assert_eq!(soft, hard);
        assert_eq!(after, hard);
        Ok(())
    }
}

//! The one place where a run's status and trigger cross the wire: `From`/`TryFrom` between
//! [`RunStatus`] / [`RunTrigger`] and the `distcron.logs.v1` enums (and their raw `i32` form in
//! messages).
//!
//! They live in the domain crate because of the orphan rule: a conversion must be written in
//! the crate of one of its two types, and `distcron-proto` cannot depend on this crate (this
//! crate depends on it for the job messages), so the crate of the domain types owns them.
//!
//! On the wire, `RUN_STATUS_UNSPECIFIED` is no status (a reader decides what an absent status
//! means), while `RUN_TRIGGER_UNSPECIFIED` is [`RunTrigger::Schedule`], the default.

use distcron_proto::logs::v1 as pb;

use crate::records::{RunStatus, RunTrigger};

/// A wire value that is no domain value: a number no enum value has, or `UNSPECIFIED` where a
/// value is needed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("unknown value {value}")]
pub struct UnknownValue {
    /// The value received.
    pub value: i32,
}

impl From<RunStatus> for pb::RunStatus {
    fn from(status: RunStatus) -> Self {
        match status {
            RunStatus::Running => Self::Running,
            RunStatus::Succeeded => Self::Succeeded,
            RunStatus::Failed => Self::Failed,
            RunStatus::TimedOut => Self::TimedOut,
            RunStatus::Killed => Self::Killed,
            RunStatus::Lost => Self::Lost,
            RunStatus::Skipped => Self::Skipped,
        }
    }
}

impl From<RunStatus> for i32 {
    fn from(status: RunStatus) -> Self {
        pb::RunStatus::from(status).into()
    }
}

impl TryFrom<pb::RunStatus> for RunStatus {
    type Error = UnknownValue;

    /// The domain status; `UNSPECIFIED` is none.
    fn try_from(status: pb::RunStatus) -> Result<Self, Self::Error> {
        Ok(match status {
            pb::RunStatus::Unspecified => {
                return Err(UnknownValue {
                    value: status.into(),
                })
            }
            pb::RunStatus::Running => Self::Running,
            pb::RunStatus::Succeeded => Self::Succeeded,
            pb::RunStatus::Failed => Self::Failed,
            pb::RunStatus::TimedOut => Self::TimedOut,
            pb::RunStatus::Killed => Self::Killed,
            pb::RunStatus::Lost => Self::Lost,
            pb::RunStatus::Skipped => Self::Skipped,
        })
    }
}

impl TryFrom<i32> for RunStatus {
    type Error = UnknownValue;

    /// The domain status of a message's `status` field; unknown numbers and `UNSPECIFIED` are
    /// none.
    fn try_from(value: i32) -> Result<Self, Self::Error> {
        pb::RunStatus::try_from(value)
            .map_err(|_| UnknownValue { value })?
            .try_into()
    }
}

impl From<RunTrigger> for pb::RunTrigger {
    fn from(trigger: RunTrigger) -> Self {
        match trigger {
            RunTrigger::Schedule => Self::Schedule,
            RunTrigger::Manual => Self::Manual,
            RunTrigger::CatchUp => Self::CatchUp,
        }
    }
}

impl From<RunTrigger> for i32 {
    fn from(trigger: RunTrigger) -> Self {
        pb::RunTrigger::from(trigger).into()
    }
}

impl From<pb::RunTrigger> for RunTrigger {
    /// The domain trigger; `UNSPECIFIED` is [`RunTrigger::Schedule`].
    fn from(trigger: pb::RunTrigger) -> Self {
        match trigger {
            pb::RunTrigger::Unspecified | pb::RunTrigger::Schedule => Self::Schedule,
            pb::RunTrigger::Manual => Self::Manual,
            pb::RunTrigger::CatchUp => Self::CatchUp,
        }
    }
}

impl TryFrom<i32> for RunTrigger {
    type Error = UnknownValue;

    /// The domain trigger of a message's `trigger` field; unknown numbers are none.
    fn try_from(value: i32) -> Result<Self, Self::Error> {
        pb::RunTrigger::try_from(value)
            .map(Self::from)
            .map_err(|_| UnknownValue { value })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_status_round_trips_with_its_wire_value() {
        let wire = [
            (RunStatus::Running, pb::RunStatus::Running, 1),
            (RunStatus::Succeeded, pb::RunStatus::Succeeded, 2),
            (RunStatus::Failed, pb::RunStatus::Failed, 3),
            (RunStatus::TimedOut, pb::RunStatus::TimedOut, 4),
            (RunStatus::Killed, pb::RunStatus::Killed, 5),
            (RunStatus::Lost, pb::RunStatus::Lost, 6),
            (RunStatus::Skipped, pb::RunStatus::Skipped, 7),
        ];
        assert_eq!(wire.len(), RunStatus::ALL.len());
        for (status, proto, value) in wire {
            assert_eq!(pb::RunStatus::from(status), proto);
            assert_eq!(i32::from(status), value);
            assert_eq!(RunStatus::try_from(proto), Ok(status));
            assert_eq!(RunStatus::try_from(value), Ok(status));
        }
        assert_eq!(
            RunStatus::try_from(pb::RunStatus::Unspecified),
            Err(UnknownValue { value: 0 })
        );
        assert_eq!(RunStatus::try_from(0), Err(UnknownValue { value: 0 }));
        let unknown = RunStatus::try_from(99);
        assert_eq!(unknown, Err(UnknownValue { value: 99 }));
        assert_eq!(
            unknown.map_err(|e| e.to_string()),
            Err("unknown value 99".into())
        );
    }

    #[test]
    fn every_trigger_round_trips_with_its_wire_value() {
        let wire = [
            (RunTrigger::Schedule, pb::RunTrigger::Schedule, 1),
            (RunTrigger::Manual, pb::RunTrigger::Manual, 2),
            (RunTrigger::CatchUp, pb::RunTrigger::CatchUp, 3),
        ];
        assert_eq!(wire.len(), RunTrigger::ALL.len());
        for (trigger, proto, value) in wire {
            assert_eq!(pb::RunTrigger::from(trigger), proto);
            assert_eq!(i32::from(trigger), value);
            assert_eq!(RunTrigger::from(proto), trigger);
            assert_eq!(RunTrigger::try_from(value), Ok(trigger));
        }
        assert_eq!(
            RunTrigger::from(pb::RunTrigger::Unspecified),
            RunTrigger::Schedule
        );
        assert_eq!(RunTrigger::try_from(0), Ok(RunTrigger::Schedule));
        assert_eq!(RunTrigger::try_from(-1), Err(UnknownValue { value: -1 }));
    }
}

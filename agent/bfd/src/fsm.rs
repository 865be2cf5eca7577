//! The BFD session state machine (RFC 5880 section 6.2 and the reception
//! rules of 6.8.6), as a pure function of (local state, event).
//!
//! ```text
//!                              +--+
//!                              |  | UP, ADMIN DOWN, TIMER
//!                              |  V
//!                      DOWN  +------+  INIT
//!               +------------|      |------------+
//!               |            | DOWN |            |
//!               |  +-------->|      |<--------+  |
//!               |  |         +------+         |  |
//!               |  |                          |  |
//!               |  |               ADMIN DOWN,|  |
//!               |  |ADMIN DOWN,          DOWN,|  |
//!               |  |TIMER                TIMER|  |
//!               V  |                          |  V
//!             +------+                      +------+
//!        +----|      |                      |      |----+
//!    DOWN|    | INIT |--------------------->|  UP  |    |INIT, UP
//!        +--->|      | INIT, UP             |      |<---+
//!             +------+                      +------+
//! ```
//!
//! RFC 5880 6.8.6: "If bfd.SessionState is AdminDown: Discard the packet.
//! If received state is AdminDown: If bfd.SessionState is not Down: Set
//! bfd.LocalDiag to 3 (Neighbor signaled session down). Set
//! bfd.SessionState to Down. Else: If bfd.SessionState is Down: If received
//! State is Down: Set bfd.SessionState to Init. Else if received State is
//! Init: Set bfd.SessionState to Up. Else if bfd.SessionState is Init: If
//! received State is Init or Up: Set bfd.SessionState to Up. Else (bfd.SessionState
//! is Up): If received State is Down: Set bfd.LocalDiag to 3 (Neighbor
//! signaled session down). Set bfd.SessionState to Down."

use super::packet::{Diag, State};

/// An input to the state machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsmEvent {
    /// A valid packet arrived carrying the remote state.
    Received(State),
    /// The Detection Time passed without a valid packet.
    DetectionTimeExpired,
    /// The operator (or a graceful shutdown) disabled the session.
    AdminDown(Diag),
    /// The operator re-enabled the session.
    AdminUp,
}

/// The transition an event causes, if any: the new state and the diagnostic
/// to record (`None` keeps the current diagnostic).
pub fn next_state(current: State, event: FsmEvent) -> Option<(State, Option<Diag>)> {
    use State::*;
    match (current, event) {
        (AdminDown, FsmEvent::AdminUp) => Some((Down, Some(Diag::None))),
        (AdminDown, _) => None,
        (_, FsmEvent::AdminDown(diag)) => Some((AdminDown, Some(diag))),
        (_, FsmEvent::AdminUp) => None,
        (Init | Up, FsmEvent::DetectionTimeExpired) => {
            Some((Down, Some(Diag::ControlDetectionExpired)))
        }
        (Down, FsmEvent::DetectionTimeExpired) => None,
        (Down, FsmEvent::Received(AdminDown)) => None,
        (_, FsmEvent::Received(AdminDown)) => Some((Down, Some(Diag::NeighborDown))),
        (Down, FsmEvent::Received(Down)) => Some((Init, None)),
        (Down, FsmEvent::Received(Init)) => Some((Up, Some(Diag::None))),
        (Down, FsmEvent::Received(Up)) => None,
        (Init, FsmEvent::Received(Init | Up)) => Some((Up, Some(Diag::None))),
        (Init, FsmEvent::Received(Down)) => None,
        (Up, FsmEvent::Received(Down)) => Some((Down, Some(Diag::NeighborDown))),
        (Up, FsmEvent::Received(Init | Up)) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use FsmEvent::{AdminUp, DetectionTimeExpired, Received};
    use State::*;

    /// Every (state, event) pair of the RFC table with its expected outcome.
    #[test]
    fn transition_table_matches_rfc_5880() {
        let rx_admin = Received(State::AdminDown);
        type Case = (State, FsmEvent, Option<(State, Option<Diag>)>);
        let cases: &[Case] = &[
            (Down, Received(Down), Some((Init, None))),
            (Down, Received(Init), Some((Up, Some(Diag::None)))),
            (Down, Received(Up), None),
            (Down, rx_admin, None),
            (Down, DetectionTimeExpired, None),
            (Init, Received(Down), None),
            (Init, Received(Init), Some((Up, Some(Diag::None)))),
            (Init, Received(Up), Some((Up, Some(Diag::None)))),
            (Init, rx_admin, Some((Down, Some(Diag::NeighborDown)))),
            (
                Init,
                DetectionTimeExpired,
                Some((Down, Some(Diag::ControlDetectionExpired))),
            ),
            (Up, Received(Down), Some((Down, Some(Diag::NeighborDown)))),
            (Up, Received(Init), None),
            (Up, Received(Up), None),
            (Up, rx_admin, Some((Down, Some(Diag::NeighborDown)))),
            (
                Up,
                DetectionTimeExpired,
                Some((Down, Some(Diag::ControlDetectionExpired))),
            ),
            (
                Up,
                FsmEvent::AdminDown(Diag::AdminDown),
                Some((State::AdminDown, Some(Diag::AdminDown))),
            ),
            (State::AdminDown, Received(Up), None),
            (State::AdminDown, DetectionTimeExpired, None),
            (State::AdminDown, AdminUp, Some((Down, Some(Diag::None)))),
            (Up, AdminUp, None),
        ];
        for (from, ev, want) in cases {
            assert_eq!(next_state(*from, *ev), *want, "{from} on {ev:?}");
        }
    }
}

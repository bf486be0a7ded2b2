//! The causation context: while a handler runs, events it publishes on the same thread are
//! caused by the event it handles and share its correlation id, without the handler passing them.

use std::cell::Cell;

use crate::event::{EventDraft, Uuid};

thread_local! {
    static CURRENT: Cell<Option<(Uuid, Uuid)>> = const { Cell::new(None) };
}

/// Runs `f` with `(event id, correlation id)` as the cause of anything published inside it.
pub fn with_cause<R>(event_id: Uuid, correlation_id: Uuid, f: impl FnOnce() -> R) -> R {
    struct Restore(Option<(Uuid, Uuid)>);
    impl Drop for Restore {
        fn drop(&mut self) {
            CURRENT.with(|current| current.set(self.0));
        }
    }
    let _restore = Restore(CURRENT.with(|current| current.replace(Some((event_id, correlation_id)))));
    f()
}

/// Fills a draft's missing causation and correlation ids from the handler being run, if any.
pub(crate) fn apply(draft: &mut EventDraft) {
    if let Some((cause, correlation)) = CURRENT.with(Cell::get) {
        draft.causation_id.get_or_insert(cause);
        draft.correlation_id.get_or_insert(correlation);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drafts_inherit_the_cause_only_inside_a_handler() {
        // Outside a handler nothing is set; inside, missing ids are filled and given ones kept.
        let (cause, correlation, own) = (Uuid::from_u128(1), Uuid::from_u128(2), Uuid::from_u128(3));
        let mut outside = EventDraft::new("T", "a", "{}");
        apply(&mut outside);
        assert_eq!((outside.causation_id, outside.correlation_id), (None, None));
        with_cause(cause, correlation, || {
            let mut inside = EventDraft::new("T", "a", "{}");
            apply(&mut inside);
            assert_eq!((inside.causation_id, inside.correlation_id), (Some(cause), Some(correlation)));
            let mut explicit = EventDraft { correlation_id: Some(own), ..EventDraft::new("T", "a", "{}") };
            apply(&mut explicit);
            assert_eq!(explicit.correlation_id, Some(own));
        });
        let mut after = EventDraft::new("T", "a", "{}");
        apply(&mut after);
        assert_eq!(after.causation_id, None);
    }
}

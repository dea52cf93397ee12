//! Group commit's gathering step, shared by every batching loop: take the request that woke
//! the loop, then whatever is already waiting, up to a weight; never wait for more. An idle
//! system writes each request at once, a busy one writes what piled up during the previous
//! write in one go. Used by PostgreSQL's record/release and publish batches and by the
//! dispatcher's recorder. (The SQLite writer gathers inside its open transaction while the
//! previous batch is flushed, and also stops at a write that poisoned the batch: its own loop.)

/// `first`, then items from `next` (a non-blocking receive) while the batch weighs less than
/// `max`, each item weighing `weight(item)`.
pub fn gather<T>(
    first: T,
    max: usize,
    weight: impl Fn(&T) -> usize,
    mut next: impl FnMut() -> Option<T>,
) -> Vec<T> {
    let mut total = weight(&first);
    let mut batch = vec![first];
    while total < max {
        match next() {
            Some(more) => {
                total += weight(&more);
                batch.push(more);
            }
            None => break,
        }
    }
    batch
}

#[cfg(test)]
mod tests {
    use super::gather;

    #[test]
    fn takes_what_is_waiting_up_to_the_weight_and_never_more() {
        let mut waiting = vec![3, 3, 3, 3].into_iter();
        assert_eq!(gather(2, 8, |n| *n, || waiting.next()), vec![2, 3, 3]);
        assert_eq!(waiting.next(), Some(3), "the rest stays for the next batch");
        let mut none = std::iter::empty::<i32>();
        assert_eq!(gather(1, 8, |_| 1, || none.next()), vec![1]);
        let mut many = 0..;
        assert_eq!(gather(0, 4, |_| 1, || many.next()).len(), 4);
    }
}

//! Decoding what start-up reads, on every core. At 250,000 LRPs turning stored rows into
//! models (base64, decryption, protobuf and JSON) is seconds of CPU that a starting server
//! spends before it can serve; one thread per core does it in a fraction of that.

use std::sync::Arc;

use crate::error::{BbsError, BbsResult};

/// Below this many records one thread decodes them all: the hand-off costs more than it saves.
const PARALLEL_FROM: usize = 2_048;

/// `decode` applied to every record, in the records' order, spread over the cores on blocking
/// threads (the actors' threads stay free).
pub async fn decode_all<R, T, F>(records: Vec<R>, decode: F) -> BbsResult<Vec<T>>
where
    R: Send + 'static,
    T: Send + 'static,
    F: Fn(R) -> T + Send + Sync + 'static,
{
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    if records.len() < PARALLEL_FROM || workers == 1 {
        return Ok(records.into_iter().map(decode).collect());
    }
    let total = records.len();
    let chunk = total.div_ceil(workers);
    let decode = Arc::new(decode);
    let mut rest = records.into_iter();
    let mut running = Vec::with_capacity(workers);
    loop {
        let part: Vec<R> = rest.by_ref().take(chunk).collect();
        if part.is_empty() {
            break;
        }
        let decode = Arc::clone(&decode);
        running.push(tokio::task::spawn_blocking(move || {
            part.into_iter().map(|r| decode(r)).collect::<Vec<T>>()
        }));
    }
    let mut decoded = Vec::with_capacity(total);
    for part in running {
        let part = part
            .await
            .map_err(|e| BbsError::Unrecoverable(format!("decoding what was loaded: {e}")))?;
        decoded.extend(part);
    }
    Ok(decoded)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn keeps_the_order_of_the_records() {
        for n in [0, 1, 2_047, 2_048, 10_001] {
            let records: Vec<usize> = (0..n).collect();
            let decoded = decode_all(records, |r| r * 2).await.unwrap();
            assert_eq!(decoded, (0..n).map(|r| r * 2).collect::<Vec<_>>(), "{n}");
        }
    }
}

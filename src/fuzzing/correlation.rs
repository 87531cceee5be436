//! The `correlation_index` target: the inbox correlation table on arbitrary
//! bytes, and a sequence of operations checked against a `HashMap`.

use std::collections::HashMap;

use super::Input;
use crate::state::CorrelationTable;

/// Most operations one input runs against the model.
const MAX_OPS: usize = 512;

/// Opens the whole input as a table file and uses it (lookups, inserts,
/// progress) without panicking or looping; then runs the input as an
/// operation sequence on a freshly formatted table, checking every lookup
/// and the final contents against a model, and that the table reopens
/// from its bytes unchanged.
pub fn correlation_index(data: &[u8]) {
    use_raw_table(data);
    run_model(data);
}

/// Any table that opens can be used: entries are hints, so nothing is
/// asserted about what lookups return, only that they return.
fn use_raw_table(data: &[u8]) {
    let mut bytes = data.to_vec();
    let Ok(mut table) = CorrelationTable::open(&mut bytes) else {
        return;
    };
    let header = table.header();
    let entries = table.entries();
    let mut input = Input::new(data.get(data.len().saturating_sub(64)..).unwrap_or_default());
    for (id, _) in entries.iter().take(4) {
        table.find(*id);
    }
    for _ in 0..4 {
        table.find(input.u128());
        let id = input.u128();
        table.insert(id, input.u64());
    }
    let count = table.header().count;
    assert!(count <= header.capacity / 2, "insert passed the half-full mark");
    table.set_progress(header.indexed_through.wrapping_add(1), false);
    let reopened = CorrelationTable::open(&mut bytes).expect("a table that was used reopens");
    assert_eq!(reopened.header().count, count);
}

fn run_model(data: &[u8]) {
    let mut input = Input::new(data);
    let capacity = 1u64 << (input.u8() % 9);
    let mut bytes = vec![0u8; CorrelationTable::<Vec<u8>>::bytes_for(capacity)];
    let mut table = CorrelationTable::format(&mut bytes, capacity, input.u64());
    let mut model: HashMap<u128, Vec<u64>> = HashMap::new();
    let mut count = 0u64;
    for _ in 0..MAX_OPS {
        if input.is_empty() {
            break;
        }
        let op = input.u8();
        let id = pick_id(&mut input);
        match op % 4 {
            0 | 1 => {
                let offset = input.u64();
                let accepted = id != 0 && count < capacity / 2;
                assert_eq!(table.insert(id, offset), accepted, "insert({id}) stored or not");
                if accepted {
                    model.entry(id).or_default().push(offset);
                    count += 1;
                }
                assert_eq!(table.header().count, count, "insert count");
            }
            2 => assert_eq!(
                sorted(table.find(id)),
                sorted(model_find(&model, id)),
                "find({id})"
            ),
            _ => {
                let through = input.u64();
                let clean = op & 0x80 != 0;
                table.set_progress(through, clean);
                assert_eq!(
                    (table.header().indexed_through, table.header().clean),
                    (through, clean)
                );
            }
        }
    }
    // Inserts leave the count in memory; the header is written with the
    // progress (as the inbox does on every progress update and on close).
    let header = table.header();
    table.set_progress(header.indexed_through, header.clean);
    let entries = sorted_entries(table.entries());
    let mut expected: Vec<(u128, u64)> = model
        .iter()
        .flat_map(|(id, offsets)| offsets.iter().map(|o| (*id, *o)))
        .collect();
    expected.sort_unstable();
    assert_eq!(entries, expected, "table entries differ from the model");
    let reopened = CorrelationTable::open(&mut bytes).expect("a formatted table reopens");
    assert_eq!(reopened.header(), header);
    assert_eq!(sorted_entries(reopened.entries()), expected);
}

/// Mostly a few small ids (so that they collide and repeat), sometimes 0
/// (never stored) or any id.
fn pick_id(input: &mut Input<'_>) -> u128 {
    match input.u8() {
        b @ 0..=239 => u128::from(b % 24),
        240..=247 => u128::from(input.u64()) << 64,
        _ => input.u128(),
    }
}

fn model_find(model: &HashMap<u128, Vec<u64>>, id: u128) -> Vec<u64> {
    if id == 0 {
        return Vec::new();
    }
    model.get(&id).cloned().unwrap_or_default()
}

fn sorted(mut offsets: Vec<u64>) -> Vec<u64> {
    offsets.sort_unstable();
    offsets
}

fn sorted_entries(mut entries: Vec<(u128, u64)>) -> Vec<(u128, u64)> {
    entries.sort_unstable();
    entries
}

//! Copying a flush's rows from the pending batches into their sorted order.
//!
//! Most columns go through arrow's `interleave`. Lists of strings drawn from
//! a small set (a token's scopes, an event's data categories) do not: read in
//! sorted order, each row costs three dependent cache misses (list offsets,
//! item offsets, item bytes) scattered over the whole flush, which made
//! `token_scopes` the costliest column of the gather. Instead each distinct
//! list is interned once, reading the batches in arrival order, the rows'
//! list ids (4 bytes a row, cache-resident) are gathered, and the column is
//! rebuilt in sorted order from the few distinct lists.

use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, ListArray, RecordBatch, StringArray};
use arrow::buffer::{NullBuffer, OffsetBuffer};
use arrow::compute::interleave;
use arrow::datatypes::{DataType, FieldRef};
use auditlake_schemas::threads::map_on_threads;
use hashbrown::HashTable;

use crate::Result;

/// Interning stops (and the column is interleaved) once a list column has
/// more distinct values than this, and more than a quarter of its rows:
/// unique lists would only be copied twice.
const MAX_DISTINCT_LISTS: usize = 4096;

/// The id of a null list.
const NULL_LIST: u32 = u32::MAX;

/// The rows `indices` (`(batch, row)`) of `batches`, in that order, as one
/// batch of the same schema; the columns in `done` (by index) are already
/// built. Columns are gathered on up to `threads` threads, lists and
/// strings first (they cost the most): a flush is the one step of an ingest
/// no other thread overlaps.
pub(crate) fn gather(
    batches: &[&RecordBatch],
    indices: &[(usize, usize)],
    done: Vec<(usize, ArrayRef)>,
    threads: usize,
) -> Result<RecordBatch> {
    let schema = batches[0].schema();
    let mut columns: Vec<Option<ArrayRef>> = vec![None; schema.fields().len()];
    for (c, array) in done {
        columns[c] = Some(array);
    }
    let mut todo: Vec<usize> = (0..columns.len())
        .filter(|&c| columns[c].is_none())
        .collect();
    todo.sort_by_key(|&c| match schema.field(c).data_type() {
        DataType::List(_) => 0,
        DataType::Utf8 => 1,
        _ => 2,
    });
    let column = |c: usize| -> Result<ArrayRef> {
        let started = std::time::Instant::now();
        let arrays: Vec<&dyn Array> = batches.iter().map(|b| b.column(c).as_ref()).collect();
        let array = match interned_lists(&arrays, indices)? {
            Some(array) => array,
            None => interleave(&arrays, indices)?,
        };
        tracing::trace!(
            column = schema.field(c).name(),
            ms = started.elapsed().as_secs_f64() * 1e3,
            "gathered a column"
        );
        Ok(array)
    };
    let gathered = map_on_threads(todo, threads, |c| (c, column(c)))
        .ok_or_else(|| crate::Error::Internal("a gather thread panicked".to_string()))?;
    for (c, array) in gathered {
        columns[c] = Some(array?);
    }
    let columns = columns
        .into_iter()
        .map(|c| c.expect("every column gathered"))
        .collect();
    Ok(RecordBatch::try_new(schema, columns)?)
}

/// The gather of a list-of-strings column through interned lists; `None` if
/// the column is of another type, holds null items, or its lists are mostly
/// distinct.
fn interned_lists(arrays: &[&dyn Array], indices: &[(usize, usize)]) -> Result<Option<ArrayRef>> {
    let Some(DataType::List(field)) = arrays.first().map(|a| a.data_type()) else {
        return Ok(None);
    };
    if field.data_type() != &DataType::Utf8 {
        return Ok(None);
    }
    let lists: Vec<&ListArray> = arrays.iter().map(|a| a.as_list::<i32>()).collect();
    if lists.iter().any(|l| l.values().null_count() > 0) {
        return Ok(None);
    }
    let mut dict = ListDictionary::new();
    let mut ids: Vec<Vec<u32>> = Vec::with_capacity(lists.len());
    let mut rows = 0usize;
    for list in &lists {
        let items = list.values().as_string::<i32>();
        let (offsets, item_offsets, bytes) = (
            list.value_offsets(),
            items.value_offsets(),
            items.value_data(),
        );
        let batch_ids = (0..list.len())
            .map(|row| {
                if list.is_null(row) {
                    return NULL_LIST;
                }
                let (start, end) = (offsets[row] as usize, offsets[row + 1] as usize);
                dict.intern(&item_offsets[start..=end], bytes)
            })
            .collect();
        ids.push(batch_ids);
        rows += list.len();
        if dict.len() > MAX_DISTINCT_LISTS.max(rows / 4) {
            return Ok(None);
        }
    }
    Ok(Some(Arc::new(dict.build(&ids, indices, field)?)))
}

/// The distinct lists of a column: each list's items, one after another.
struct ListDictionary {
    /// List ids, hashed by their items.
    table: HashTable<u32>,
    hasher: foldhash::fast::FixedState,
    /// Per list id: its first item, its number of items and its hash.
    lists: Vec<(u32, u32, u64)>,
    /// Item `i` is `items[item_offsets[i]..item_offsets[i + 1]]`.
    item_offsets: Vec<usize>,
    items: String,
}

impl ListDictionary {
    fn new() -> Self {
        Self {
            table: HashTable::new(),
            hasher: foldhash::fast::FixedState::default(),
            lists: Vec::new(),
            item_offsets: vec![0],
            items: String::new(),
        }
    }

    fn len(&self) -> usize {
        self.lists.len()
    }

    /// The items of list `id` as a byte range of `items`, and their offsets.
    fn list(&self, id: u32) -> (&[usize], &[u8]) {
        let (first, n, _) = self.lists[id as usize];
        let offsets = &self.item_offsets[first as usize..=(first + n) as usize];
        let range = offsets[0]..offsets[offsets.len() - 1];
        (offsets, &self.items.as_bytes()[range])
    }

    /// The id of the list whose items are `bytes[offsets[i]..offsets[i + 1]]`
    /// (items of a valid string array), added if new.
    fn intern(&mut self, offsets: &[i32], bytes: &[u8]) -> u32 {
        let base = offsets[0];
        let row_bytes = &bytes[base as usize..offsets[offsets.len() - 1] as usize];
        let lens = offsets.windows(2).map(|w| (w[1] - w[0]) as usize);
        let hash = hash_list(&self.hasher, lens, row_bytes);
        let found = self.table.find(hash, |&id| {
            let (theirs, their_bytes) = self.list(id);
            theirs.len() == offsets.len()
                && their_bytes == row_bytes
                && theirs
                    .iter()
                    .zip(offsets)
                    .all(|(t, o)| t - theirs[0] == (o - base) as usize)
        });
        if let Some(&id) = found {
            return id;
        }
        let id = self.lists.len() as u32;
        let first = self.item_offsets.len() - 1;
        self.lists
            .push((first as u32, (offsets.len() - 1) as u32, hash));
        // Items of a valid string array are valid UTF-8.
        self.items
            .push_str(std::str::from_utf8(row_bytes).expect("string array items are UTF-8"));
        let start = self.items.len() - row_bytes.len();
        self.item_offsets
            .extend(offsets[1..].iter().map(|o| start + (o - base) as usize));
        let lists = &self.lists;
        self.table
            .insert_unique(hash, id, |&id| lists[id as usize].2);
        id
    }

    /// The list column of rows `indices`, given each batch's list ids. Each
    /// row copies its list's bytes in one piece and its item offsets shifted,
    /// instead of appending item by item through a builder.
    fn build(
        &self,
        ids: &[Vec<u32>],
        indices: &[(usize, usize)],
        field: &FieldRef,
    ) -> Result<ListArray> {
        let ordered: Vec<u32> = indices.iter().map(|&(b, r)| ids[b][r]).collect();
        let (mut items, mut bytes, mut nulls) = (0usize, 0usize, 0usize);
        for &id in &ordered {
            if id == NULL_LIST {
                nulls += 1;
            } else {
                let (offsets, list_bytes) = self.list(id);
                items += offsets.len() - 1;
                bytes += list_bytes.len();
            }
        }
        let overflow = || crate::Error::Internal("a flush's list items pass 2 GiB".to_string());
        i32::try_from(bytes).map_err(|_| overflow())?;
        i32::try_from(items).map_err(|_| overflow())?;
        let mut values: Vec<u8> = Vec::with_capacity(bytes);
        let mut item_offsets: Vec<i32> = Vec::with_capacity(items + 1);
        item_offsets.push(0);
        let mut list_offsets: Vec<i32> = Vec::with_capacity(ordered.len() + 1);
        list_offsets.push(0);
        for &id in &ordered {
            if id != NULL_LIST {
                let (offsets, list_bytes) = self.list(id);
                let shift = values.len() as i64 - offsets[0] as i64;
                values.extend_from_slice(list_bytes);
                // In range: the totals above fit in i32.
                item_offsets.extend(offsets[1..].iter().map(|&o| (o as i64 + shift) as i32));
            }
            list_offsets.push((item_offsets.len() - 1) as i32);
        }
        let strings =
            StringArray::try_new(OffsetBuffer::new(item_offsets.into()), values.into(), None)?;
        let validity =
            (nulls > 0).then(|| NullBuffer::from_iter(ordered.iter().map(|&id| id != NULL_LIST)));
        Ok(ListArray::try_new(
            field.clone(),
            OffsetBuffer::new(list_offsets.into()),
            Arc::new(strings),
            validity,
        )?)
    }
}

/// The hash of a list given its items' lengths and their bytes, one after
/// another (the lengths tell `["ab"]` from `["a", "b"]`).
fn hash_list(
    state: &foldhash::fast::FixedState,
    lens: impl Iterator<Item = usize>,
    bytes: &[u8],
) -> u64 {
    let mut h = state.build_hasher();
    for len in lens {
        h.write_usize(len);
    }
    h.write(bytes);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{ListBuilder, StringBuilder};
    use arrow::datatypes::{Field, Schema};

    fn lists(rows: &[Option<&[&str]>]) -> ListArray {
        let field = Arc::new(Field::new("element", DataType::Utf8, true));
        let mut b = ListBuilder::new(StringBuilder::new()).with_field(field);
        for row in rows {
            match row {
                Some(items) => {
                    for item in *items {
                        b.values().append_value(item);
                    }
                    b.append(true);
                }
                None => b.append(false),
            }
        }
        b.finish()
    }

    fn batch(rows: &[Option<&[&str]>], ids: &[&str]) -> RecordBatch {
        let scopes = lists(rows);
        let schema = Arc::new(Schema::new(vec![
            Field::new("scopes", scopes.data_type().clone(), true),
            Field::new("id", DataType::Utf8, false),
        ]));
        let ids = StringArray::from_iter_values(ids.iter());
        RecordBatch::try_new(schema, vec![Arc::new(scopes), Arc::new(ids)]).unwrap()
    }

    /// Interned lists gather exactly like arrow's interleave: null and empty
    /// lists, lists whose items concatenate alike (`["ab"]`, `["a", "b"]`),
    /// repeats across batches, a sliced batch; pre-built columns are used
    /// as given.
    #[test]
    fn interned_gather_matches_interleave() {
        let ab: &[&str] = &["ab"];
        let a_b: &[&str] = &["a", "b"];
        let empty: &[&str] = &[];
        let long: &[&str] = &["order.read", "item.read", "refund.read", "\u{e9}t\u{e9}"];
        let rows = [
            Some(ab),
            Some(a_b),
            None,
            Some(empty),
            Some(long),
            Some(a_b),
        ];
        let first = batch(&rows, &["0", "1", "2", "3", "4", "5"]);
        let second = batch(
            &[Some(long), None, Some(ab), Some(empty)],
            &["6", "7", "8", "9"],
        );
        let sliced = first.slice(2, 3);
        let batches = [&first, &second, &sliced];
        let indices = [
            (1, 3),
            (0, 1),
            (2, 0),
            (0, 0),
            (1, 0),
            (2, 2),
            (0, 4),
            (0, 2),
            (1, 2),
            (0, 5),
            (2, 1),
            (1, 1),
            (0, 3),
        ];
        let arrays: Vec<&dyn Array> = batches.iter().map(|b| b.column(0).as_ref()).collect();
        let interned = interned_lists(&arrays, &indices)
            .unwrap()
            .expect("few distinct lists are interned");
        let expected = interleave(&arrays, &indices).unwrap();
        assert_eq!(interned.as_ref(), expected.as_ref());

        let ids: ArrayRef = Arc::new(StringArray::from_iter_values(
            (0..indices.len()).map(|i| format!("given {i}")),
        ));
        let out = gather(&batches, &indices, vec![(1, ids.clone())], 1).unwrap();
        assert_eq!(out.column(0).as_ref(), expected.as_ref());
        assert_eq!(out.column(1), &ids);
        let out = gather(&batches, &indices, Vec::new(), 2).unwrap();
        let arrays: Vec<&dyn Array> = batches.iter().map(|b| b.column(1).as_ref()).collect();
        assert_eq!(
            out.column(1).as_ref(),
            interleave(&arrays, &indices).unwrap().as_ref()
        );
    }

    /// Lists that are mostly distinct, or that hold null items, are left to
    /// interleave.
    #[test]
    fn distinct_or_null_items_are_not_interned() {
        let names: Vec<String> = (0..MAX_DISTINCT_LISTS + 100)
            .map(|i| format!("s{i}"))
            .collect();
        let items: Vec<[&str; 1]> = names.iter().map(|n| [n.as_str()]).collect();
        let rows: Vec<Option<&[&str]>> = items.iter().map(|i| Some(&i[..])).collect();
        let distinct = lists(&rows);
        let indices: Vec<(usize, usize)> = (0..rows.len()).rev().map(|r| (0, r)).collect();
        assert!(
            interned_lists(&[&distinct as &dyn Array], &indices)
                .unwrap()
                .is_none()
        );
        let few = distinct.slice(0, 1000);
        let first: Vec<(usize, usize)> = (0..10).map(|r| (0, r)).collect();
        assert!(
            interned_lists(&[&few as &dyn Array], &first)
                .unwrap()
                .is_some()
        );

        let field = Arc::new(Field::new("element", DataType::Utf8, true));
        let mut b = ListBuilder::new(StringBuilder::new()).with_field(field);
        b.values().append_null();
        b.append(true);
        let null_item = b.finish();
        assert!(
            interned_lists(&[&null_item as &dyn Array], &[(0, 0)])
                .unwrap()
                .is_none()
        );
    }
}

//! Writing encoded objects straight into the bundle file, once, in a fixed
//! order: the order of the jobs (the scan's order of large files) that first
//! hold each object.
//!
//! Workers encode objects in parallel. The worker whose job is next in order
//! writes into the file directly; the others encode into memory and hand
//! their bytes over when they finish. A worker whose object grows past
//! [`MEM_CAP`] in memory, or that would take the memory held by finished,
//! waiting objects past [`MAX_BUFFERED`], waits for its turn and then
//! streams into the file. So memory stays bounded whatever the objects'
//! sizes, every byte is written once, and the same inputs give the same file
//! whatever the threads did.
//!
//! Each object is written by the earliest job that holds it: a job that
//! finds its object claimed by a later job takes the claim over, and the
//! later job's work is dropped.
//!
//! A pack is one unit for a run of consecutive jobs (small files): its
//! members are compressed together, and when its turn comes it keeps the
//! members it still owns (a member taken over by an earlier job since is
//! left out, and the pack compressed again without it).

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::sync::{Condvar, Mutex, MutexGuard};

use crate::Digest;
use crate::bundle::Encoding;

/// Most bytes one object is encoded into memory before its worker waits for
/// its turn to stream into the file.
pub const MEM_CAP: usize = 16 << 20;
/// Most bytes of finished objects waiting for their turn.
pub const MAX_BUFFERED: u64 = 64 << 20;

/// Where one written object lies in the objects region.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// From the start of the objects region.
    pub offset: u64,
    pub stored_size: u64,
    pub size: u64,
    pub encoding: Encoding,
    pub source: Option<Digest>,
    /// For a pack member, its place in the decoded pack.
    pub packed_at: u64,
}

/// How an encoded object is stored (everything but where).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub size: u64,
    pub encoding: Encoding,
    pub source: Option<Digest>,
}

enum Done {
    Skip,
    Ready {
        digest: Digest,
        data: Vec<u8>,
        stored: Stored,
    },
    Packs {
        /// Jobs the packs stand for (from the first).
        jobs: usize,
        /// Each pack's members and frame, in the order they are written.
        packs: Vec<(Vec<PackMember>, Vec<u8>)>,
        level: i32,
    },
}

impl Done {
    fn buffered(&self) -> u64 {
        match self {
            Done::Skip => 0,
            Done::Ready { data, .. } => data.len() as u64,
            Done::Packs { packs, .. } => packs
                .iter()
                .map(|(members, frame)| {
                    frame.len() as u64 + members.iter().map(|m| m.data.len() as u64).sum::<u64>()
                })
                .sum(),
        }
    }
}

/// One object of a pack: its job, digest and bytes.
#[derive(Debug, Clone)]
pub struct PackMember {
    pub job: usize,
    pub digest: Digest,
    pub data: Vec<u8>,
}

/// The members' bytes, one after another, as one zstd frame (stating its
/// content size, which the reader needs, and without a checksum: each
/// object's digest is the check).
pub fn pack_frame(members: &[PackMember], level: i32) -> io::Result<Vec<u8>> {
    let total: usize = members.iter().map(|m| m.data.len()).sum();
    let mut all = Vec::with_capacity(total);
    for m in members {
        all.extend_from_slice(&m.data);
    }
    let mut c = zstd::bulk::Compressor::new(level)?;
    c.include_checksum(false)?;
    c.include_contentsize(true)?;
    c.compress(&all)
}

struct State {
    /// The next job whose object goes into the file.
    next: usize,
    /// End of what was written (relative to the objects region).
    at: u64,
    done: BTreeMap<usize, Done>,
    buffered: u64,
    records: BTreeMap<Digest, Record>,
    failed: Option<String>,
}

/// A job was overtaken: an earlier job holds the same object.
#[derive(Debug)]
pub struct Superseded;

impl std::fmt::Display for Superseded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an earlier file holds the same object")
    }
}
impl std::error::Error for Superseded {}

/// Whether an I/O error means the job was overtaken (not a failure).
pub fn is_superseded(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|i| i.is::<Superseded>())
}

pub struct ObjectWriter<'f> {
    file: &'f File,
    /// Absolute offset of the objects region in the file.
    base: u64,
    state: Mutex<State>,
    turn: Condvar,
    claimed: Mutex<HashMap<Digest, usize>>,
}

impl<'f> ObjectWriter<'f> {
    pub fn new(file: &'f File, base: u64) -> Self {
        Self {
            file,
            base,
            state: Mutex::new(State {
                next: 0,
                at: 0,
                done: BTreeMap::new(),
                buffered: 0,
                records: BTreeMap::new(),
                failed: None,
            }),
            turn: Condvar::new(),
            claimed: Mutex::new(HashMap::new()),
        }
    }

    /// Claims `digest` for `job`; false when an earlier job holds it.
    pub fn claim(&self, job: usize, digest: &Digest) -> bool {
        let mut c = self.claimed.lock().unwrap();
        match c.get(digest) {
            Some(&owner) if owner < job => false,
            _ => {
                c.insert(*digest, job);
                true
            }
        }
    }

    fn owns(&self, job: usize, digest: &Digest) -> bool {
        self.claimed.lock().unwrap().get(digest) == Some(&job)
    }

    /// `job` writes nothing (its object is in a base or held by an earlier job).
    pub fn skip(&self, job: usize) -> io::Result<()> {
        let mut st = self.state.lock().unwrap();
        st.done.insert(job, Done::Skip);
        self.drain(&mut st)
    }

    /// Stops every worker waiting for its turn (a job failed).
    pub fn fail(&self, why: String) {
        let mut st = self.state.lock().unwrap();
        st.failed.get_or_insert(why);
        self.turn.notify_all();
    }

    /// Where `job`'s encoded object goes.
    pub fn out(&self, job: usize, digest: Digest) -> Out<'_, 'f> {
        Out {
            w: self,
            job,
            digest,
            mem: Vec::new(),
            streaming: None,
            len: 0,
        }
    }

    /// The packs for the `jobs` jobs from `first` are complete: each the
    /// objects it claimed and their [`pack_frame`]. They go into the file,
    /// one after another, now or when their turn comes.
    pub fn commit_packs(
        &self,
        first: usize,
        jobs: usize,
        packs: Vec<(Vec<PackMember>, Vec<u8>)>,
        level: i32,
    ) -> io::Result<()> {
        let done = Done::Packs { jobs, packs, level };
        let len = done.buffered();
        let mut st = self.state.lock().unwrap();
        if st.next != first && st.buffered + len > MAX_BUFFERED {
            st = self.wait_turn(st, first)?;
        }
        st.buffered += len;
        st.done.insert(first, done);
        self.drain(&mut st)
    }

    /// Appends an object outside the job order (raw images, after the scan).
    pub fn append(&self, digest: Digest, data: &[u8], stored: Stored) -> io::Result<()> {
        let mut st = self.state.lock().unwrap();
        if st.records.contains_key(&digest) {
            return Ok(());
        }
        let at = st.at;
        self.file.write_all_at(data, self.base + at)?;
        st.at += data.len() as u64;
        st.records
            .insert(digest, record(at, data.len() as u64, stored, 0));
        Ok(())
    }

    /// The objects written and the objects region's length; fails if some
    /// job never finished.
    pub fn finish(self, jobs: usize) -> io::Result<(BTreeMap<Digest, Record>, u64)> {
        let st = self.state.into_inner().unwrap();
        if let Some(why) = st.failed {
            return Err(io::Error::other(why));
        }
        if st.next != jobs || !st.done.is_empty() {
            return Err(io::Error::other(format!(
                "internal error: {} of {jobs} files were written",
                st.next
            )));
        }
        Ok((st.records, st.at))
    }

    fn wait_turn<'s>(
        &'s self,
        mut st: MutexGuard<'s, State>,
        job: usize,
    ) -> io::Result<MutexGuard<'s, State>> {
        while st.next != job && st.failed.is_none() {
            st = self.turn.wait(st).unwrap();
        }
        if let Some(why) = &st.failed {
            return Err(io::Error::other(format!("stopped: {why}")));
        }
        Ok(st)
    }

    /// Writes every finished object whose turn it is.
    fn drain(&self, st: &mut State) -> io::Result<()> {
        let before = st.next;
        while let Some(done) = st.done.remove(&st.next) {
            st.buffered -= done.buffered();
            match done {
                Done::Skip => st.next += 1,
                Done::Ready {
                    digest,
                    data,
                    stored,
                } => {
                    if self.owns(st.next, &digest) {
                        let at = st.at;
                        self.file.write_all_at(&data, self.base + at)?;
                        st.at += data.len() as u64;
                        st.records
                            .insert(digest, record(at, data.len() as u64, stored, 0));
                    }
                    st.next += 1;
                }
                Done::Packs { jobs, packs, level } => {
                    for (mut members, mut frame) in packs {
                        // Every earlier job has claimed what it holds by now.
                        let before = members.len();
                        members.retain(|m| self.owns(m.job, &m.digest));
                        if members.is_empty() {
                            continue;
                        }
                        if members.len() != before {
                            frame = pack_frame(&members, level)?;
                        }
                        let at = st.at;
                        self.file.write_all_at(&frame, self.base + at)?;
                        st.at += frame.len() as u64;
                        let mut inside = 0u64;
                        for m in members {
                            let stored = Stored {
                                size: m.data.len() as u64,
                                encoding: Encoding::Packed,
                                source: None,
                            };
                            st.records
                                .insert(m.digest, record(at, frame.len() as u64, stored, inside));
                            inside += m.data.len() as u64;
                        }
                    }
                    st.next += jobs;
                }
            }
        }
        if st.next != before {
            self.turn.notify_all();
        }
        Ok(())
    }
}

fn record(offset: u64, stored_size: u64, s: Stored, packed_at: u64) -> Record {
    Record {
        offset,
        stored_size,
        size: s.size,
        encoding: s.encoding,
        source: s.source,
        packed_at,
    }
}

/// One job's encoded object on its way into the file.
pub struct Out<'w, 'f> {
    w: &'w ObjectWriter<'f>,
    job: usize,
    digest: Digest,
    mem: Vec<u8>,
    /// Once it is this job's turn: where its bytes start.
    streaming: Option<u64>,
    len: u64,
}

impl Out<'_, '_> {
    /// Bytes written so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Forgets what was written (to write the object another way).
    pub fn reset(&mut self) {
        self.mem.clear();
        self.len = 0;
    }

    fn take_turn(&mut self) -> io::Result<()> {
        let st = self.w.state.lock().unwrap();
        let st = self.w.wait_turn(st, self.job)?;
        if !self.w.owns(self.job, &self.digest) {
            return Err(io::Error::other(Superseded));
        }
        let start = st.at;
        drop(st);
        self.w.file.write_all_at(&self.mem, self.w.base + start)?;
        self.mem = Vec::new();
        self.streaming = Some(start);
        Ok(())
    }

    /// The object is complete: it goes into the file now or when its turn
    /// comes.
    pub fn commit(mut self, stored: Stored) -> io::Result<()> {
        let w = self.w;
        if let Some(start) = self.streaming {
            let mut st = w.state.lock().unwrap();
            st.at = start + self.len;
            st.records
                .insert(self.digest, record(start, self.len, stored, 0));
            st.next += 1;
            return w.drain(&mut st);
        }
        let mut st = w.state.lock().unwrap();
        if st.next != self.job && st.buffered + self.len > MAX_BUFFERED {
            st = w.wait_turn(st, self.job)?;
        }
        if !w.owns(self.job, &self.digest) {
            st.done.insert(self.job, Done::Skip);
        } else {
            st.buffered += self.len;
            st.done.insert(
                self.job,
                Done::Ready {
                    digest: self.digest,
                    data: std::mem::take(&mut self.mem),
                    stored,
                },
            );
        }
        w.drain(&mut st)
    }
}

impl Write for Out<'_, '_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self.streaming {
            Some(start) => {
                self.w
                    .file
                    .write_all_at(buf, self.w.base + start + self.len)?;
            }
            None => {
                self.mem.extend_from_slice(buf);
                if self.mem.len() > MEM_CAP {
                    self.len += buf.len() as u64;
                    self.take_turn()?;
                    return Ok(buf.len());
                }
            }
        }
        self.len += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(size: u64) -> Stored {
        Stored {
            size,
            encoding: Encoding::Raw,
            source: None,
        }
    }

    #[test]
    fn objects_land_in_job_order_whatever_the_finishing_order() {
        let f = tempfile::tempfile().unwrap();
        let w = ObjectWriter::new(&f, 10);
        let d = |i: u8| Digest([i; 32]);
        // Job 2 finishes first, job 1 is a duplicate of job 0, which job 3
        // claimed before job 0 did: job 0 takes it over.
        assert!(w.claim(2, &d(2)));
        let mut o = w.out(2, d(2));
        o.write_all(b"two").unwrap();
        o.commit(stored(3)).unwrap();
        assert!(w.claim(3, &d(0)));
        let mut late = w.out(3, d(0));
        late.write_all(b"zero-late").unwrap();
        assert!(w.claim(0, &d(0)));
        assert!(!w.claim(1, &d(0)));
        w.skip(1).unwrap();
        late.commit(stored(9)).unwrap();
        let mut o = w.out(0, d(0));
        o.write_all(b"zero").unwrap();
        o.commit(stored(4)).unwrap();
        let (records, len) = w.finish(4).unwrap();
        assert_eq!(len, 7);
        assert_eq!(records[&d(0)].offset, 0);
        assert_eq!(records[&d(2)].offset, 4);
        let mut buf = vec![0u8; 7];
        f.read_exact_at(&mut buf, 10).unwrap();
        assert_eq!(&buf, b"zerotwo");
    }

    #[test]
    fn a_large_object_streams_in_its_turn() {
        let f = tempfile::tempfile().unwrap();
        let w = ObjectWriter::new(&f, 0);
        let big = vec![7u8; MEM_CAP + 5];
        std::thread::scope(|s| {
            s.spawn(|| {
                assert!(w.claim(1, &Digest([1; 32])));
                let mut o = w.out(1, Digest([1; 32]));
                o.write_all(&big).unwrap(); // waits for job 0
                o.commit(stored(big.len() as u64)).unwrap();
            });
            std::thread::sleep(std::time::Duration::from_millis(50));
            assert!(w.claim(0, &Digest([0; 32])));
            let mut o = w.out(0, Digest([0; 32]));
            o.write_all(b"first").unwrap();
            o.commit(stored(5)).unwrap();
        });
        let (records, len) = w.finish(2).unwrap();
        assert_eq!(len, 5 + big.len() as u64);
        assert_eq!(records[&Digest([1; 32])].offset, 5);
    }

    #[test]
    fn a_pack_leaves_out_a_member_an_earlier_job_took_over() {
        let f = tempfile::tempfile().unwrap();
        let w = ObjectWriter::new(&f, 0);
        let (a, b) = (Digest([0xa; 32]), Digest([0xb; 32]));
        let member = |job, digest, data: &[u8]| PackMember {
            job,
            digest,
            data: data.to_vec(),
        };
        // The pack of jobs 1 and 2 claims `a` before job 0 does, and
        // compresses it; job 0 then takes `a` over.
        assert!(w.claim(1, &a));
        assert!(w.claim(2, &b));
        let members = vec![member(1, a, b"object a"), member(2, b, b"object b, packed")];
        let frame = pack_frame(&members, 3).unwrap();
        w.commit_packs(1, 2, vec![(members, frame)], 3).unwrap();
        assert!(w.claim(0, &a));
        let mut o = w.out(0, a);
        o.write_all(b"object a").unwrap();
        o.commit(stored(8)).unwrap();
        let (records, len) = w.finish(3).unwrap();
        assert_eq!(records[&a].encoding, Encoding::Raw);
        assert_eq!(records[&a].offset, 0);
        let p = &records[&b];
        assert_eq!(
            (p.encoding, p.offset, p.packed_at),
            (Encoding::Packed, 8, 0)
        );
        assert_eq!(len, 8 + p.stored_size);
        // The pack was compressed again, with `b` alone.
        let mut frame = vec![0u8; p.stored_size as usize];
        f.read_exact_at(&mut frame, 8).unwrap();
        assert_eq!(
            zstd::bulk::decompress(&frame, 1 << 20).unwrap(),
            b"object b, packed"
        );
    }

    #[test]
    fn a_pack_of_objects_held_elsewhere_writes_nothing() {
        let f = tempfile::tempfile().unwrap();
        let w = ObjectWriter::new(&f, 0);
        assert!(w.claim(0, &Digest([1; 32])));
        let mut o = w.out(0, Digest([1; 32]));
        o.write_all(b"one").unwrap();
        o.commit(stored(3)).unwrap();
        // Jobs 1 and 2 are the same object as job 0: nothing to pack.
        assert!(!w.claim(1, &Digest([1; 32])));
        w.commit_packs(1, 2, Vec::new(), 3).unwrap();
        let (records, len) = w.finish(3).unwrap();
        assert_eq!((records.len(), len), (1, 3));
    }
}

//! What the server reads back from its own files after a crash or a hand edit: the embedded
//! state's upload records and the ban file.
//!
//! Properties: no panic, whatever the bytes; a record file that is not a whole record reads as
//! an error (never as a record, so never as a wrong offset): a record cut short anywhere is
//! refused, and a whole one reads back equal; opening the state folder and listing expired
//! uploads never fails on garbage; a ban file of any content restores only the bans it can
//! read, and saving the ban list afterwards works.
#![no_main]

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use arbitrary::Arbitrary;
use hmac_file_server::ops::bans::{BanPolicy, Bans};
use hmac_file_server::state::embedded::EmbeddedState;
use hmac_file_server::state::{Concat, UploadKind, UploadRecord, UploadState, random_id};
use libfuzzer_sys::fuzz_target;

mod common;
use common::runtime;

#[derive(Arbitrary, Debug)]
enum Input<'a> {
    /// Raw bytes as a record file.
    RecordBytes(&'a [u8]),
    /// A record the server wrote, cut after `cut` bytes.
    CutRecord { record: Fields<'a>, cut: usize },
    /// Raw bytes as the ban file.
    BanBytes(&'a [u8]),
    /// A well-formed ban file with any addresses and times.
    BanEntries(Vec<(Address<'a>, Option<u64>)>),
}

#[derive(Arbitrary, Debug)]
enum Address<'a> {
    V4([u8; 4]),
    V6([u16; 8]),
    Text(&'a str),
}

impl Address<'_> {
    fn text(&self) -> String {
        match self {
            Address::V4(octets) => IpAddr::from(*octets).to_string(),
            Address::V6(segments) => IpAddr::from(*segments).to_string(),
            Address::Text(text) => text.to_string(),
        }
    }
}

#[derive(Arbitrary, Debug)]
struct Fields<'a> {
    tus: bool,
    key: &'a str,
    length: Option<u64>,
    offset: u64,
    content_type: &'a str,
    metadata: Option<&'a str>,
    created_unix: u64,
    expires_unix: u64,
    partial: bool,
}

fuzz_target!(|input: Input<'_>| {
    let dir = tempfile::tempdir().unwrap();
    match input {
        Input::RecordBytes(bytes) => {
            let id = random_id();
            std::fs::write(dir.path().join(format!("{id}.json")), bytes).unwrap();
            let state =
                UploadState::Embedded(EmbeddedState::open(dir.path()).expect("garbage does not stop the start"));
            runtime().block_on(async {
                if let Ok(Some(record)) = state.get(&id).await {
                    // It read as a record: then it is one, byte for byte what serde reads.
                    assert_eq!(serde_json::from_slice::<UploadRecord>(bytes).ok(), Some(record));
                }
                state
                    .expired(u64::MAX)
                    .await
                    .expect("listing expired uploads survives garbage");
            });
        }
        Input::CutRecord { record: f, cut } => {
            let record = UploadRecord {
                id: random_id(),
                kind: if f.tus { UploadKind::Tus } else { UploadKind::Session },
                key: f.key.to_string(),
                length: f.length,
                offset: f.offset,
                content_type: f.content_type.to_string(),
                metadata: f.metadata.map(str::to_string),
                created_unix: f.created_unix,
                expires_unix: f.expires_unix,
                concat: if f.partial { Concat::Partial } else { Concat::None },
                handle: Default::default(),
                completed: f.partial && f.tus,
            };
            let state = UploadState::Embedded(EmbeddedState::open(dir.path()).unwrap());
            runtime().block_on(async {
                state.put(&record, Duration::from_secs(60)).await.unwrap();
                let path = dir.path().join(format!("{}.json", record.id));
                let whole = std::fs::read(&path).unwrap();
                let cut = cut % (whole.len() + 1);
                std::fs::write(&path, &whole[..cut]).unwrap();
                let read = state.get(&record.id).await;
                if cut == whole.len() {
                    assert_eq!(read.unwrap(), Some(record));
                } else {
                    assert!(
                        read.is_err(),
                        "a record cut at {cut} of {} read as {read:?}",
                        whole.len()
                    );
                }
                // And a restart over it.
                EmbeddedState::open(dir.path()).unwrap();
            });
        }
        Input::BanBytes(bytes) => restore_bans(dir.path(), bytes),
        Input::BanEntries(entries) => {
            let map: serde_json::Map<String, serde_json::Value> = entries
                .into_iter()
                .map(|(ip, until)| (ip.text(), until.into()))
                .collect();
            restore_bans(dir.path(), &serde_json::to_vec(&map).unwrap());
        }
    }
});

fn restore_bans(dir: &std::path::Path, bytes: &[u8]) {
    let path = dir.join("bans.json");
    std::fs::write(&path, bytes).unwrap();
    let bans = Bans::persistent(path.clone());
    let now = Instant::now();
    let _ = bans.banned_for(IpAddr::V4(Ipv4Addr::LOCALHOST), now);
    // A failure that bans saves the list over whatever was there.
    let policy = BanPolicy {
        after_fails: 1,
        window: Duration::from_secs(60),
        auto_unban: true,
        ban_time: Duration::from_secs(60),
    };
    let ip = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7));
    bans.record_failure(ip, &policy, now);
    assert!(bans.banned_for(ip, now).is_some());
    Bans::persistent(path);
}

use super::*;
use crate::config::Config;
use crate::topology::{ShardId, TopologyChange};

fn config_topology() -> Topology {
    let config = Config::from_toml_str(
        r#"
[[shard]]
name = "a"
master = "127.0.0.1:7001"
replicas = ["127.0.0.1:7002"]
slots = ["0-8191"]
[[shard]]
name = "b"
master = "127.0.0.1:7003"
slots = ["8192-16383"]
"#,
        "test.toml",
    )
    .unwrap();
    Topology::from_config(&config)
}

fn later(t: &Topology) -> Topology {
    t.apply(&TopologyChange::BeginMigration {
        slots: vec!["0-99".parse().unwrap()],
        to: ShardId(1),
    })
    .unwrap()
}

fn leftovers(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.contains(".tmp."))
        .collect()
}

#[test]
fn missing_file_loads_as_none() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileTopologyStore::new(dir.path().join("topology.toml"));
    assert!(store.load().unwrap().is_none());
}

#[test]
fn save_then_load_round_trips_and_replaces() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("topology.toml");
    let store = FileTopologyStore::new(&path);
    assert_eq!(store.path(), path);
    let first = config_topology();
    store.save(&first).unwrap();
    assert_eq!(store.load().unwrap(), Some(first.clone()));
    let text = fs::read_to_string(&path).unwrap();
    assert!(text.starts_with("# redshard live topology"), "{text}");
    assert!(text.contains("slots = [\"0-8191\"]"), "{text}");

    let second = later(&first);
    store.save(&second).unwrap();
    assert_eq!(store.load().unwrap(), Some(second));
    assert!(
        leftovers(dir.path()).is_empty(),
        "{:?}",
        leftovers(dir.path())
    );
}

#[test]
fn the_proxy_users_are_saved_and_carried_on() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileTopologyStore::new(dir.path().join("topology.toml"));
    let first = config_topology();
    assert_eq!(first.users, None);
    let users = vec![
        "user app on #2d71 ~app:* resetchannels -@all +get".to_owned(),
        "user default on nopass ~* &* +@all".to_owned(),
    ];
    let with_users = first
        .apply(&TopologyChange::SetUsers {
            users: users.clone(),
        })
        .unwrap();
    assert_eq!(with_users.epoch, first.epoch + 1);
    store.save(&with_users).unwrap();
    assert_eq!(store.load().unwrap(), Some(with_users.clone()));
    // Every later epoch carries them on.
    assert_eq!(later(&with_users).users, Some(users));
}

#[test]
fn corrupt_file_is_an_error_naming_the_path_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("topology.toml");
    let store = FileTopologyStore::new(&path);
    fs::write(&path, "epoch = 3\n[[shard]\n").unwrap();
    let err = store.load().unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { .. }));
    let message = err.to_string();
    assert!(message.contains(&path.display().to_string()), "{message}");
    assert!(message.contains("line 2"), "{message}");

    // Valid TOML, invalid topology.
    let text = toml::to_string(&config_topology())
        .unwrap()
        .replace("\"8192-16383\"", "\"8192-16382\"");
    fs::write(&path, text).unwrap();
    let message = store.load().unwrap_err().to_string();
    assert!(message.contains("slot 16383 is not assigned"), "{message}");
    assert!(message.contains("topology.toml"), "{message}");
}

#[test]
fn save_creates_a_missing_directory() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("absent").join("topology.toml");
    let store = FileTopologyStore::new(&path);
    store.save(&config_topology()).unwrap();
    assert_eq!(store.load().unwrap(), Some(config_topology()));
}

#[test]
fn save_under_a_file_fails_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("plain"), "x").unwrap();
    let path = dir.path().join("plain").join("topology.toml");
    let err = FileTopologyStore::new(&path)
        .save(&config_topology())
        .unwrap_err();
    assert!(matches!(err, StoreError::Io { .. }));
    assert!(err.to_string().contains("plain"), "{err}");
}

#[test]
fn failed_rename_keeps_the_old_file_and_removes_the_temp() {
    let dir = tempfile::tempdir().unwrap();
    // The target is a non-empty directory: the rename over it fails.
    let path = dir.path().join("topology.toml");
    fs::create_dir(&path).unwrap();
    fs::write(path.join("keep"), "x").unwrap();
    let err = FileTopologyStore::new(&path)
        .save(&config_topology())
        .unwrap_err();
    assert!(err.to_string().contains("rename"), "{err}");
    assert!(path.join("keep").exists());
    assert!(
        leftovers(dir.path()).is_empty(),
        "{:?}",
        leftovers(dir.path())
    );
}

#[test]
fn unreadable_path_is_an_io_error() {
    let dir = tempfile::tempdir().unwrap();
    // Reading a directory fails with something other than NotFound.
    let err = FileTopologyStore::new(dir.path()).load().unwrap_err();
    assert!(matches!(err, StoreError::Io { .. }), "{err}");
}

#[test]
fn memory_store_keeps_the_last_save() {
    let store = MemoryTopologyStore::new();
    assert!(store.load().unwrap().is_none());
    let t = config_topology();
    store.save(&t).unwrap();
    store.save(&later(&t)).unwrap();
    assert_eq!(store.load().unwrap().map(|t| t.epoch), Some(2));
}

#[test]
fn higher_persisted_epoch_wins() {
    let config = config_topology();
    let (t, source) = choose_initial(config.clone(), None);
    assert_eq!((t.epoch, source), (1, InitialSource::Config));

    let newer = later(&config);
    let (t, source) = choose_initial(config.clone(), Some(newer.clone()));
    assert_eq!(t, newer);
    assert_eq!(source, InitialSource::Persisted { epoch: 2 });
    assert_eq!(source.to_string(), "the persisted topology (epoch 2)");

    // Equal epochs: the configuration file is the newer description.
    let mut same = newer;
    same.epoch = 1;
    let (t, source) = choose_initial(config.clone(), Some(same));
    assert_eq!((t, source), (config, InitialSource::Config));
    assert_eq!(InitialSource::Config.to_string(), "the configuration file");
}

#[test]
fn the_run_marker_is_written_while_running_and_removed_by_a_clean_stop() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("topology.toml");
    let store = FileTopologyStore::new(&path);
    let topology = config_topology();
    store.save(&topology).unwrap();
    assert_eq!(
        store.load_marked().unwrap(),
        Some((topology.clone(), false))
    );
    assert!(!fs::read_to_string(&path).unwrap().contains("running"));

    // A serving proxy's saves carry it; a plain load ignores it.
    store.set_running(true);
    store.save(&topology).unwrap();
    assert!(fs::read_to_string(&path)
        .unwrap()
        .contains("running = true"));
    let clone = store.clone();
    let next = later(&topology);
    clone.save(&next).unwrap();
    assert_eq!(store.load_marked().unwrap(), Some((next.clone(), true)));
    assert_eq!(store.load().unwrap(), Some(next.clone()));

    // The clean stop's save removes it.
    store.set_running(false);
    store.save(&next).unwrap();
    assert_eq!(store.load_marked().unwrap(), Some((next, false)));
}

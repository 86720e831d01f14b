//! Image writes, checksums, root device hints, config drive and metadata erase, checked
//! against independent tools: qemu-img/qemu-io build the images and the reference
//! conversions, sfdisk builds and verifies partition tables, mtools and blkid read the config
//! drive, blkid and wipefs look for leftover signatures.

mod common;

use std::path::Path;

use common::*;
use ingot_agent::disk::Disk;
use ingot_agent::hardware::{Hardware, SimulatedHardware};
use ingot_agent::hints::RootDeviceHints;
use ingot_agent::protocol::{
    Checksum, ChecksumAlgorithm, ChecksumSource, ConfigDrive, ImageFormat, WriteImage,
};
use ingot_agent::qcow2::Qcow2Writer;

const MIB: u64 = 1 << 20;

fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"))
}

fn digest(tool: &str, path: &Path) -> String {
    run(tool, &[&path.to_string_lossy()])
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_owned()
}

fn request(url: String, checksum: Option<Checksum>, serial: &str) -> WriteImage {
    WriteImage {
        url,
        format: ImageFormat::Auto,
        checksum,
        root_device_hints: RootDeviceHints {
            serial_number: Some(serial.into()),
            ..RootDeviceHints::default()
        },
        config_drive: None,
    }
}

fn sha256(value: String) -> Option<Checksum> {
    Some(Checksum {
        algorithm: ChecksumAlgorithm::Sha256,
        value: ChecksumSource::Digest(value),
    })
}

/// True when the first `len` bytes of both files are equal (cmp reads holes cheaply).
fn same_prefix(a: &Path, b: &Path, len: u64) -> bool {
    let (code, _) = run_status(
        "cmp",
        &[
            "-n",
            &len.to_string(),
            &a.to_string_lossy(),
            &b.to_string_lossy(),
        ],
    );
    code == 0
}

fn dirty(path: &Path, size: u64) {
    // Stale bytes everywhere an unallocated qcow2 cluster could land: they must read as zero.
    for offset in (0..size).step_by((5 * MIB) as usize) {
        poke(path, offset + 12345, &[0xaa; 70_000]);
    }
}

async fn write(
    machine: &SimulatedHardware,
    dir: &Path,
    request: &WriteImage,
) -> Result<ingot_agent::protocol::ImageWritten, String> {
    writer(dir)
        .write(machine, request, no_progress())
        .await
        .map_err(|e| {
            let mut text = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(cause) = source {
                text.push_str(&format!(": {cause}"));
                source = cause.source();
            }
            text
        })
}

#[tokio::test]
async fn raw_and_qcow2_writes_match_qemu_img_convert_byte_for_byte() {
    let dir = tempdir();
    let images = dir.path().join("images");
    std::fs::create_dir_all(&images).unwrap_or_default();
    let raw = images.join("disk.raw");
    raw_image_with_gpt(&raw);
    let raw_str = raw.to_string_lossy().into_owned();
    let variants: [(&str, &[&str]); 5] = [
        ("v3.qcow2", &["-O", "qcow2"]),
        ("v2.qcow2", &["-O", "qcow2", "-o", "compat=0.10"]),
        ("compressed.qcow2", &["-O", "qcow2", "-c"]),
        (
            "small-clusters.qcow2",
            &["-O", "qcow2", "-o", "cluster_size=4096"],
        ),
        (
            "big-clusters.qcow2",
            &["-O", "qcow2", "-o", "cluster_size=2M"],
        ),
    ];
    for (name, args) in variants {
        let out = images.join(name).to_string_lossy().into_owned();
        let mut all = vec!["convert", "-f", "raw"];
        all.extend_from_slice(args);
        all.extend_from_slice(&[&raw_str, &out]);
        run("qemu-img", &all);
    }
    // Zero-flagged clusters over previously written data (qcow2 v3 only).
    let zeroed = images
        .join("zero-flag.qcow2")
        .to_string_lossy()
        .into_owned();
    run(
        "qemu-img",
        &["convert", "-f", "raw", "-O", "qcow2", &raw_str, &zeroed],
    );
    run(
        "qemu-io",
        &[
            "-f",
            "qcow2",
            "-c",
            "write -z 1M 1M",
            "-c",
            "write -z 30M 64k",
            &zeroed,
        ],
    );

    let base = serve_dir(&images).await;
    let machine = machine(dir.path(), &[("root", 64 * MIB, false)]);
    let disk = disk_path(&machine, 0);

    let raw_digest = digest("sha256sum", &raw);
    dirty(&disk, 64 * MIB);
    let written = write(
        &machine,
        dir.path(),
        &request(format!("{base}/disk.raw"), sha256(raw_digest), "root"),
    )
    .await;
    assert_eq!(
        written.map(|w| (w.format, w.image_bytes)),
        Ok((ImageFormat::Raw, 48 * MIB))
    );
    assert!(
        same_prefix(&disk, &raw, 48 * MIB),
        "raw image differs on disk"
    );

    for name in [
        "v3.qcow2",
        "v2.qcow2",
        "compressed.qcow2",
        "small-clusters.qcow2",
        "big-clusters.qcow2",
        "zero-flag.qcow2",
    ] {
        let image = images.join(name);
        let reference = dir.path().join(format!("{name}.reference"));
        run(
            "qemu-img",
            &[
                "convert",
                "-O",
                "raw",
                &image.to_string_lossy(),
                &reference.to_string_lossy(),
            ],
        );
        dirty(&disk, 64 * MIB);

        let checksum = sha256(digest("sha256sum", &image));
        let written = write(
            &machine,
            dir.path(),
            &request(format!("{base}/{name}"), checksum, "root"),
        )
        .await;

        assert_eq!(
            written.map(|w| (w.format, w.image_bytes)),
            Ok((ImageFormat::Qcow2, 48 * MIB)),
            "{name}"
        );
        assert!(
            same_prefix(&disk, &reference, 48 * MIB),
            "{name} differs from qemu-img convert output"
        );
    }
}

#[test]
fn a_qcow2_with_tables_after_the_data_is_converted_through_the_spill_file() {
    let dir = tempdir();
    let raw = dir.path().join("disk.raw");
    raw_image_with_gpt(&raw);
    let image = dir.path().join("moved-l1.qcow2");
    let reference = dir.path().join("reference.raw");
    run(
        "qemu-img",
        &[
            "convert",
            "-f",
            "raw",
            "-O",
            "qcow2",
            "-o",
            "cluster_size=4096",
            &raw.to_string_lossy(),
            &image.to_string_lossy(),
        ],
    );
    // Growing past 1 GiB with 4 KiB clusters needs a bigger L1 table, which qemu moves to
    // the end of the file: the L1 now comes after every L2 table and data cluster.
    run(
        "qemu-img",
        &["resize", "-f", "qcow2", &image.to_string_lossy(), "1100M"],
    );
    run(
        "qemu-img",
        &[
            "convert",
            "-O",
            "raw",
            &image.to_string_lossy(),
            &reference.to_string_lossy(),
        ],
    );
    let target = dir.path().join("target.img");
    sparse_file(&target, 2048 * MIB);
    dirty(&target, 64 * MIB);

    let mut disk = Disk::new(
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&target)
            .unwrap_or_else(|e| panic!("{e}")),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let mut writer = Qcow2Writer::new(&mut disk, dir.path());
    let bytes = std::fs::read(&image).unwrap_or_default();
    for chunk in bytes.chunks(100_000) {
        writer.feed(chunk).unwrap_or_else(|e| panic!("{e}"));
    }
    let converted = writer.finish().unwrap_or_else(|e| panic!("{e}"));

    assert_eq!(converted.virtual_size, 1100 * MIB);
    assert!(
        converted.spilled_bytes > 8 * MIB,
        "the data should have gone through the spill file"
    );
    assert!(
        same_prefix(&target, &reference, 1100 * MIB),
        "spilled conversion differs from qemu-img convert"
    );
}

#[tokio::test]
async fn a_wrong_checksum_fails_cleanly_and_leaves_the_disk_unbootable() {
    let dir = tempdir();
    let images = dir.path().join("images");
    std::fs::create_dir_all(&images).unwrap_or_default();
    raw_image_with_gpt(&images.join("disk.raw"));
    let base = serve_dir(&images).await;
    let machine = machine(dir.path(), &[("root", 64 * MIB, false)]);

    let wrong = sha256("0".repeat(64));
    let error = write(
        &machine,
        dir.path(),
        &request(format!("{base}/disk.raw"), wrong, "root"),
    )
    .await
    .err()
    .unwrap_or_default();

    assert!(
        error.contains("sha256 checksum mismatch") && error.contains("marked unbootable"),
        "{error}"
    );
    let disk = disk_path(&machine, 0);
    assert!(
        peek(&disk, 0, MIB as usize).iter().all(|b| *b == 0),
        "boot area must be cleared"
    );
    let (code, _) = run_status("blkid", &["-p", &disk.to_string_lossy()]);
    assert_eq!(
        code, 2,
        "no partition table may remain after a failed checksum"
    );
}

#[tokio::test]
async fn checksum_files_and_automatic_algorithms_are_verified() {
    let dir = tempdir();
    let images = dir.path().join("images");
    std::fs::create_dir_all(&images).unwrap_or_default();
    let raw = images.join("disk.raw");
    raw_image_with_gpt(&raw);
    std::fs::write(
        images.join("SHA512SUMS"),
        run("sha512sum", &[&raw.to_string_lossy()]).replace(&*images.to_string_lossy(), ""),
    )
    .unwrap_or_default();
    let base = serve_dir(&images).await;
    let machine = machine(dir.path(), &[("root", 64 * MIB, false)]);
    let cases = [
        Checksum {
            algorithm: ChecksumAlgorithm::Auto,
            value: ChecksumSource::Url(format!("{base}/SHA512SUMS")),
        },
        Checksum {
            algorithm: ChecksumAlgorithm::Auto,
            value: ChecksumSource::Digest(digest("md5sum", &raw)),
        },
        Checksum {
            algorithm: ChecksumAlgorithm::Md5,
            value: ChecksumSource::Digest(digest("md5sum", &raw).to_uppercase()),
        },
    ];

    for checksum in cases {
        let written = write(
            &machine,
            dir.path(),
            &request(format!("{base}/disk.raw"), Some(checksum.clone()), "root"),
        )
        .await;
        let verified = written.map(|w| w.verified_checksum.unwrap_or_default());
        assert!(
            verified
                .as_ref()
                .is_ok_and(|v| v.starts_with("sha512:") || v.starts_with("md5:")),
            "{checksum:?}: {verified:?}"
        );
    }

    let missing = Checksum {
        algorithm: ChecksumAlgorithm::Auto,
        value: ChecksumSource::Url(format!("{base}/NOPE")),
    };
    let error = write(
        &machine,
        dir.path(),
        &request(format!("{base}/disk.raw"), Some(missing), "root"),
    )
    .await
    .err();
    assert!(error.unwrap_or_default().contains("HTTP status 404"));
}

#[tokio::test]
async fn root_device_hints_choose_one_disk_among_four() {
    let dir = tempdir();
    let images = dir.path().join("images");
    std::fs::create_dir_all(&images).unwrap_or_default();
    raw_image_with_gpt(&images.join("disk.raw"));
    let base = serve_dir(&images).await;
    let machine = machine(
        dir.path(),
        &[
            ("S-A", 8192 * MIB, true),
            ("S-B", 6144 * MIB, false),
            ("S-C", 64 * MIB, false),
            ("S-D", 10240 * MIB, true),
        ],
    );
    let cases = [
        (serde_json::json!({}), 1),
        (serde_json::json!({"serialNumber": "S-D"}), 3),
        (serde_json::json!({"deviceName": "/dev/sdc"}), 2),
        (
            serde_json::json!({"rotational": true, "minSizeGigabytes": 9}),
            3,
        ),
        (serde_json::json!({"model": "model-s-a"}), 0),
        (serde_json::json!({"wwn": "0x5000c50000000002"}), 2),
    ];

    for (hints, expected) in cases {
        let hints: RootDeviceHints =
            serde_json::from_value(hints).unwrap_or_else(|e| panic!("{e}"));
        for index in 0..4 {
            sparse_file(
                &disk_path(&machine, index),
                machine.details.storage[index].size_bytes,
            );
        }
        let mut req = request(format!("{base}/disk.raw"), None, "");
        req.root_device_hints = hints.clone();

        let written = write(&machine, dir.path(), &req).await;

        assert_eq!(
            written.map(|w| w.device),
            Ok(machine.details.storage[expected].name.clone()),
            "{hints:?}"
        );
        for index in 0..4 {
            let has_gpt = peek(&disk_path(&machine, index), 512, 8) == b"EFI PART";
            assert_eq!(has_gpt, index == expected, "{hints:?}: disk {index}");
        }
    }
}

fn config_drive() -> ConfigDrive {
    ConfigDrive {
        user_data: Some("#cloud-config\nhostname: worker-0\n".into()),
        meta_data: serde_json::json!({"uuid": "4b1c0f2e-1111-2222-3333-444455556666", "name": "worker-0"}),
        network_data: Some(
            serde_json::json!({"links": [{"id": "eno1", "type": "phy", "ethernet_mac_address": "52:54:00:00:00:01"}]}),
        ),
    }
}

fn read_config_drive_file(disk: &Path, offset: u64, name: &str) -> String {
    run(
        "mtype",
        &[
            "-i",
            &format!("{}@@{offset}", disk.to_string_lossy()),
            &format!("::openstack/latest/{name}"),
        ],
    )
}

#[tokio::test]
async fn the_config_drive_is_readable_by_standard_tools_on_gpt_and_mbr_images() {
    let dir = tempdir();
    let images = dir.path().join("images");
    std::fs::create_dir_all(&images).unwrap_or_default();
    raw_image_with_gpt(&images.join("gpt.raw"));
    let mbr = images.join("mbr.raw");
    sparse_file(&mbr, 8 * MIB);
    run(
        "sh",
        &[
            "-c",
            &format!(
                "echo 'label: dos\nstart=2048, size=8192, type=83' | sfdisk --quiet {}",
                mbr.to_string_lossy()
            ),
        ],
    );
    let base = serve_dir(&images).await;
    let machine = machine(dir.path(), &[("root", 256 * MIB, false)]);
    let disk = disk_path(&machine, 0);
    let disk_str = disk.to_string_lossy().into_owned();

    for (name, label) in [("gpt.raw", "gpt"), ("mbr.raw", "dos")] {
        sparse_file(&disk, 256 * MIB);
        let mut req = request(format!("{base}/{name}"), None, "root");
        req.config_drive = Some(config_drive());

        let written = write(&machine, dir.path(), &req)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));

        let offset = written.config_drive_offset.unwrap_or_default();
        assert_eq!(offset % MIB, 0);
        let table: serde_json::Value =
            serde_json::from_str(&run("sfdisk", &["--json", &disk_str])).unwrap_or_default();
        assert_eq!(table["partitiontable"]["label"], label);
        let partitions = table["partitiontable"]["partitions"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert_eq!(
            partitions
                .last()
                .map(|p| p["start"].as_u64().unwrap_or_default() * 512),
            Some(offset),
            "{name}"
        );
        if label == "gpt" {
            let (code, out) = run_status("sfdisk", &["--verify", &disk_str]);
            assert_eq!(code, 0, "{out}");
            assert_eq!(
                table["partitiontable"]["lastlba"].as_u64(),
                Some(256 * MIB / 512 - 34),
                "backup GPT moved to the end"
            );
        }
        let probe = run(
            "blkid",
            &["-p", "-O", &offset.to_string(), "-o", "export", &disk_str],
        );
        assert!(
            probe.contains("LABEL=config-2") && probe.contains("TYPE=vfat"),
            "{probe}"
        );
        let meta: serde_json::Value =
            serde_json::from_str(&read_config_drive_file(&disk, offset, "meta_data.json"))
                .unwrap_or_default();
        assert_eq!(meta["name"], "worker-0");
        let network: serde_json::Value =
            serde_json::from_str(&read_config_drive_file(&disk, offset, "network_data.json"))
                .unwrap_or_default();
        assert_eq!(
            network["links"][0]["ethernet_mac_address"],
            "52:54:00:00:00:01"
        );
        assert_eq!(
            read_config_drive_file(&disk, offset, "user_data"),
            "#cloud-config\nhostname: worker-0\n"
        );
    }
}

#[test]
fn after_erase_no_partition_table_or_filesystem_signature_remains() {
    let dir = tempdir();
    let machine = machine(
        dir.path(),
        &[("one", 256 * MIB, false), ("two", 128 * MIB, true)],
    );
    let first = disk_path(&machine, 0);
    let second = disk_path(&machine, 1);
    raw_image_with_gpt(&dir.path().join("image.raw"));
    run(
        "dd",
        &[
            &format!("if={}", dir.path().join("image.raw").to_string_lossy()),
            &format!("of={}", first.to_string_lossy()),
            "conv=notrunc",
            "status=none",
        ],
    );
    let fs = dir.path().join("fs.ext4");
    sparse_file(&fs, 20 * MIB);
    run("mkfs.ext4", &["-q", "-F", &fs.to_string_lossy()]);
    run(
        "dd",
        &[
            &format!("if={}", fs.to_string_lossy()),
            &format!("of={}", first.to_string_lossy()),
            "bs=1M",
            "seek=11",
            "conv=notrunc",
            "status=none",
        ],
    );
    run("mkfs.ext4", &["-q", "-F", &second.to_string_lossy()]);
    assert!(run("wipefs", &["-n", &first.to_string_lossy()]).contains("gpt"));
    assert!(
        run(
            "blkid",
            &[
                "-p",
                "-O",
                &(11 * MIB).to_string(),
                &first.to_string_lossy()
            ]
        )
        .contains("ext4")
    );

    for storage in &machine.details.storage {
        let file = machine.open_disk(storage).unwrap_or_else(|e| panic!("{e}"));
        let mut disk = Disk::new(file).unwrap_or_else(|e| panic!("{e}"));
        ingot_agent::erase::erase_disk(&mut disk).unwrap_or_else(|e| panic!("{e}"));
    }

    for path in [&first, &second] {
        let path = path.to_string_lossy();
        assert_eq!(
            run("wipefs", &["-n", &path]).trim(),
            "",
            "wipefs still finds signatures on {path}"
        );
        assert_eq!(
            run_status("blkid", &["-p", &path]).0,
            2,
            "blkid still finds a signature on {path}"
        );
    }
    let partition = run_status(
        "blkid",
        &[
            "-p",
            "-O",
            &(11 * MIB).to_string(),
            &first.to_string_lossy(),
        ],
    );
    assert_eq!(
        partition.0, 2,
        "the filesystem inside the old partition must be gone: {}",
        partition.1
    );
}

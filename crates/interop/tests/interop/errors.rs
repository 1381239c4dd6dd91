//! Wrong files: another architecture, a truncated file, something that is not safetensors, and
//! pickles that would run code. Every message names the file and the problem.

use crate::common::*;
use resnet_interop::{load_weights, read_state_dict, InteropError};
use resnet_models::zoo::{self, ModelOptions};
use std::io::Write;
use std::path::Path;

fn message(r: Result<impl std::fmt::Debug, InteropError>) -> (InteropError, String) {
    let e = r.expect_err("the file must be refused");
    let m = e.to_string();
    (e, m)
}

#[test]
fn weights_of_another_architecture_are_listed_tensor_by_tensor() {
    let dir = TempDir::new("wrong-arch");
    let file = dir.path("resnet18.safetensors");
    let spec = zoo::spec("resnet18", &ModelOptions::default()).unwrap();
    resnet_interop::write_safetensors(&file, &generated_state(&spec)).unwrap();

    let (e, m) = message(load_weights(&file, Some("resnet34")));
    assert!(matches!(e, InteropError::WrongArchitecture { .. }), "{m}");
    assert!(m.starts_with(&format!("{}: these are not weights for resnet34", file.display())), "{m}");
    assert!(m.contains("missing tensor(s): layer1.2.conv1.weight"), "{m}");

    let (_, m) = message(load_weights(&file, Some("resnet50-v1.5")));
    assert!(m.contains("missing tensor(s): layer1.0.conv3.weight") && m.contains("wrong shape"), "{m}");
    assert!(m.contains("layer1.0.conv1.weight (expected [64, 64, 1, 1], found [64, 64, 3, 3])"), "{m}");

    // A CIFAR net with option B projections is not the zoo's option-A resnet20.
    let (_, m) = message(load_weights(&fixture("tiny_basic.pth"), Some("resnet20")));
    assert!(m.contains("tiny_basic.pth: these are not weights for resnet20"), "{m}");
    assert!(m.contains("unexpected tensor(s): layer2.0.downsample.0.weight"), "{m}");

    let (e, _) = message(load_weights(&file, Some("resnet19")));
    assert!(matches!(e, InteropError::Model(_)));
    // The name itself is fine: the network loads.
    assert_eq!(load_weights(&file, Some("resnet18")).unwrap().spec(), &spec);
}

#[test]
fn truncated_files_say_so() {
    let dir = TempDir::new("truncated");
    for name in ["tiny_basic.safetensors", "tiny_basic.pth"] {
        let bytes = std::fs::read(fixture(name)).unwrap();
        for keep in [bytes.len() - 100, bytes.len() / 2, 40] {
            let cut = dir.path(&format!("cut-{keep}-{name}"));
            std::fs::write(&cut, &bytes[..keep]).unwrap();
            let (e, m) = message(read_state_dict(&cut));
            assert!(matches!(e, InteropError::Truncated { .. }), "{name} cut to {keep}: {m}");
            assert!(m.starts_with(&format!("{}: truncated file", cut.display())), "{m}");
        }
    }
}

#[test]
fn files_that_are_not_weights_say_what_they_are_not() {
    let dir = TempDir::new("not-weights");
    let cases: [(&str, &[u8]); 4] = [
        ("notes.safetensors", b"these are not the weights you are looking for\n"),
        ("photo.safetensors", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x10"),
        ("tiny.safetensors", b"{}"),
        ("empty.safetensors", b""),
    ];
    for (name, bytes) in cases {
        let path = dir.path(name);
        std::fs::write(&path, bytes).unwrap();
        let (e, m) = message(load_weights(&path, None));
        assert!(matches!(e, InteropError::NotSafetensors { .. }), "{name}: {m}");
        assert!(m.starts_with(&format!("{}: not a safetensors file", path.display())), "{m}");
    }
    // A valid safetensors file of something else.
    let path = dir.path("other.safetensors");
    let t = resnet_models::NamedTensor {
        name: "encoder.embed".into(),
        shape: vec![2],
        data: resnet_models::TensorData::F32(vec![1.0, 2.0]),
    };
    resnet_interop::write_safetensors(&path, &[t]).unwrap();
    let (e, m) = message(load_weights(&path, None));
    assert!(matches!(e, InteropError::Infer { .. }), "{m}");
    assert!(m.starts_with(&format!("{}: cannot infer the architecture", path.display())), "{m}");
    // A zip file that is not a torch archive.
    let path = dir.path("other.pth");
    write_zip(&path, &[("docs/readme.txt", b"hello")]);
    let (e, m) = message(read_state_dict(&path));
    assert!(matches!(e, InteropError::NotPthArchive { .. }), "{m}");
    // What torch.save wrote before PyTorch 1.6 (pickle protocol 2 and its magic number).
    let path = dir.path("legacy.pth");
    std::fs::write(&path, b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19.\x80\x02M\xe9\x03.").unwrap();
    let (e, m) = message(read_state_dict(&path));
    assert!(matches!(e, InteropError::NotPthArchive { .. }) && m.contains("legacy"), "{m}");
    let (e, _) = message(read_state_dict(Path::new("/nonexistent/weights.safetensors")));
    assert!(matches!(e, InteropError::Read { .. }));
}

fn write_zip(path: &Path, entries: &[(&str, &[u8])]) {
    let mut zip = zip::ZipWriter::new(std::fs::File::create(path).unwrap());
    let opts = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    for (name, data) in entries {
        zip.start_file(*name, opts).unwrap();
        zip.write_all(data).unwrap();
    }
    zip.finish().unwrap();
}

#[test]
fn a_pth_that_would_run_a_shell_command_is_refused() {
    // Written by torch.save: an object whose __reduce__ returns (os.system, ("echo ...",)).
    let (e, m) = message(read_state_dict(&fixture("malicious.pth")));
    match &e {
        InteropError::ForbiddenGlobal { module, name, .. } => {
            assert_eq!((module.as_str(), name.as_str()), ("posix", "system"))
        }
        other => panic!("{other}"),
    }
    assert!(m.contains("malicious.pth: refused to load: data.pkl names the global 'posix.system'"), "{m}");

    let dir = TempDir::new("pickles");
    let storage = b"\x00\x00\x80\x3f";
    let cases: [(&[u8], &str); 4] = [
        (b"\x80\x02cos\nsystem\nX\x02\x00\x00\x00idq\x00\x85R.", "global 'os.system'"),
        (b"\x80\x04\x8c\x08builtins\x8c\x04exec\x93.", "global 'builtins.exec'"),
        (b"\x80\x02(X\x02\x00\x00\x00ido.", "opcode OBJ"),
        (b"\x80\x02(X\x02\x00\x00\x00idios\nsystem\n.", "opcode INST"),
    ];
    for (i, (pickle, what)) in cases.iter().enumerate() {
        let path = dir.path(&format!("evil{i}.pth"));
        write_zip(&path, &[("evil/data.pkl", pickle), ("evil/data/0", storage)]);
        let (_, m) = message(read_state_dict(&path));
        assert!(
            m.contains(&format!("evil{i}.pth: refused to load")) && m.contains(what.split(' ').nth(1).unwrap()),
            "{what}: {m}"
        );
    }
    // A storage key that tries to leave the archive's data folder.
    let pickle = b"\x80\x02}(X\x01\x00\x00\x00wctorch._utils\n_rebuild_tensor_v2\n((X\x07\x00\x00\x00storagectorch\nFloatStorage\nX\x05\x00\x00\x00../..X\x03\x00\x00\x00cpuK\x01tQK\x00K\x01\x85K\x01\x85\x89}tRu.";
    let path = dir.path("escape.pth");
    write_zip(&path, &[("escape/data.pkl", pickle)]);
    let (e, m) = message(read_state_dict(&path));
    assert!(matches!(e, InteropError::BadPickle { .. }) && m.contains("not a plain name"), "{m}");
}

#[test]
fn a_v1_bottleneck_net_is_not_written_as_a_torchvision_file() {
    // Every key and shape of the paper's ResNet-50 matches torchvision's resnet50, whose v1.5
    // stride placement computes something else from them.
    let net = resnet_models::ResNet::new(zoo::spec("resnet50", &ModelOptions::default()).unwrap()).unwrap();
    let dir = TempDir::new("v1");
    let path = dir.path("r50.safetensors");
    let (_, m) = message(resnet_interop::export_torchvision(&net, &path));
    assert!(m.contains("resnet50") && m.contains("v1 stride placement") && m.contains("v1.5"), "{m}");
    assert!(!path.exists());
    let net = resnet_models::ResNet::new(zoo::spec("resnet50-v1.5", &ModelOptions::default()).unwrap()).unwrap();
    resnet_interop::export_torchvision(&net, &path).unwrap();
}

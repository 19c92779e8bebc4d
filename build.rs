//! Compiles our own admin gRPC API (`proto/`). The Envoy protos come pre-generated
//! from the `envoy-types` crate, so only our service is built here.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Use the vendored protoc unless the caller points PROTOC somewhere on purpose.
    if std::env::var_os("PROTOC").is_none() {
        std::env::set_var("PROTOC", protoc_bin_vendored::protoc_bin_path()?);
    }
    println!("cargo:rerun-if-changed=proto");
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_protos(&["proto/hydra_authz/admin/v1/admin.proto"], &["proto"])?;
    Ok(())
}

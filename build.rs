//! Compiles our own admin gRPC API (`proto/`), and Envoy's `Authorization`
//! service over our view of its request. The Envoy messages come
//! pre-generated from the `envoy-types` crate.

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
    // Same package, service and method as Envoy's, so the same gRPC path
    // (/envoy.service.auth.v3.Authorization/Check); the request is decoded
    // as src/extract/envoy_wire.rs (only what a decision reads), the answer
    // is written as src/respond/envoy_wire.rs (the fields we send).
    let check = tonic_build::manual::Method::builder()
        .name("check")
        .route_name("Check")
        .input_type("crate::extract::envoy_wire::CheckRequest")
        .output_type("crate::respond::envoy_wire::CheckResponse")
        .codec_path("::tonic_prost::ProstCodec")
        .build();
    let authorization = tonic_build::manual::Service::builder()
        .name("Authorization")
        .package("envoy.service.auth.v3")
        .method(check)
        .build();
    tonic_build::manual::Builder::new()
        .build_client(false)
        .compile(&[authorization]);
    Ok(())
}

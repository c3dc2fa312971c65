//! Compiles locket's proto with protox (no system `protoc`) into prost messages and tonic's
//! client and server.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/locket.proto");
    let descriptors = protox::compile(["proto/locket.proto"], ["proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(descriptors)?;
    Ok(())
}

//! SHA-256 from aws-lc, the crypto library rustls, jsonwebtoken and the
//! fleet's HMACs already use here: one implementation for every digest
//! (cache keys, token fingerprints, the identity JWT's cache, file change
//! detection). aws-lc picks SHA-NI or vector code by the CPU; RustCrypto's
//! `sha2` (used until 2026-11-30) fell back to portable code on CPUs
//! without SHA-NI (Intel's server parts before Ice Lake, and callgrind):
//! about 3,500 instructions a 64-byte block, where aws-lc's AVX code takes
//! 2,100 (callgrind, a cached check's token digest: 7,440 -> 4,894).

use aws_lc_rs::digest;

/// SHA-256 of `data`.
pub fn of(data: &[u8]) -> [u8; 32] {
    finish(digest::digest(&digest::SHA256, data))
}

/// SHA-256 of several parts fed in order.
pub struct Hasher(digest::Context);

impl Default for Hasher {
    fn default() -> Self {
        Hasher(digest::Context::new(&digest::SHA256))
    }
}

impl Hasher {
    pub fn update(&mut self, data: impl AsRef<[u8]>) {
        self.0.update(data.as_ref());
    }

    pub fn finish(self) -> [u8; 32] {
        finish(self.0.finish())
    }
}

fn finish(d: digest::Digest) -> [u8; 32] {
    let mut out = [0u8; 32];
    // SHA-256 digests are always 32 bytes.
    out.copy_from_slice(d.as_ref());
    out
}

#[cfg(test)]
mod tests {
    /// FIPS 180-2's example, whole and in parts.
    #[test]
    fn the_standard_vector() {
        let abc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        assert_eq!(hex::encode(super::of(b"abc")), abc);
        let mut h = super::Hasher::default();
        h.update(b"a");
        h.update("bc");
        assert_eq!(hex::encode(h.finish()), abc);
        assert_ne!(super::of(b"abd"), super::of(b"abc"));
    }
}

//! Incremental Internet checksum updates (RFC 1624).
//!
//! RFC 1624, eqn. 3: `HC' = ~(~HC + ~m + m')`, where `m` is the old value of
//! a 16-bit field and `m'` the new one. One's-complement sums do not depend on
//! byte order as long as every operand uses the same one, so the fields are
//! fed exactly as they sit in the packet (network order, native load).

/// Accumulated `~m + m'` terms of one or more field changes.
#[derive(Clone, Copy)]
pub struct Delta(u64);

impl Delta {
    #[inline(always)]
    pub const fn new() -> Self {
        Self(0)
    }

    /// Account for a 32-bit field changing from `old` to `new`.
    #[inline(always)]
    pub const fn u32(self, old: u32, new: u32) -> Self {
        let o = !old;
        Self(
            self.0
                + (o >> 16) as u64
                + (o & 0xffff) as u64
                + (new >> 16) as u64
                + (new & 0xffff) as u64,
        )
    }

    /// Account for a 16-bit field changing from `old` to `new`.
    #[inline(always)]
    pub const fn u16(self, old: u16, new: u16) -> Self {
        Self(self.0 + (!old) as u64 + new as u64)
    }

    /// The accumulated change folded to 16 bits, to store and apply later
    /// with [`Delta::from_folded`] (one's-complement sums are associative,
    /// so folding early gives the same checksum).
    #[inline(always)]
    pub const fn folded(self) -> u16 {
        let mut s = self.0;
        s = (s & 0xffff) + (s >> 16);
        s = (s & 0xffff) + (s >> 16);
        s = (s & 0xffff) + (s >> 16);
        s as u16
    }

    /// A change stored by [`Delta::folded`].
    #[inline(always)]
    pub const fn from_folded(d: u16) -> Self {
        Self(d as u64)
    }

    /// Apply the accumulated change to checksum `check`.
    #[inline(always)]
    pub const fn apply(self, check: u16) -> u16 {
        let mut s = (!check) as u64 + self.0;
        s = (s & 0xffff) + (s >> 16);
        s = (s & 0xffff) + (s >> 16);
        s = (s & 0xffff) + (s >> 16);
        !(s as u16)
    }
}

//! [`GroupMachine::seek`]: it drops every entry (deliveries open before it
//! then get `LeaseExpired`) and is refused while a record is claimed for
//! dead-lettering, whose outcome would otherwise land after it.

use super::tests::Topic;
use super::*;

#[test]
fn a_seek_is_refused_while_a_dead_letter_is_under_way_and_drops_every_entry_otherwise() {
    let rules = Rules {
        lease_ms: 1_000,
        retry: RetryPolicy::default().max_attempts(1),
    };
    let mut machine = GroupMachine::new(0, fastrand::Rng::with_seed(1));
    let mut acquired = Acquired::default();
    let claim = machine.acquire(0, 2, &rules, &mut Topic(0..5), &mut acquired);
    assert!(claim.unwrap().is_none());
    let [first, second] = acquired.leases[..] else {
        panic!("two leases: {:?}", acquired.leases)
    };
    let Ok(Nacked::DeadLetter(claim)) = machine.nack(&first, "bad", None, 0, &rules) else {
        panic!("the only attempt failed: to dead-letter")
    };

    assert!(matches!(machine.seek(0), Err(Error::InvalidArgument(_))));
    machine.dead_letter_done(claim.offset);
    let event = machine.seek(3).expect("no dead letter under way");
    machine.apply(&event);
    assert_eq!(
        (machine.next_offset(), machine.low_watermark(), machine.len()),
        (3, 3, 0)
    );
    assert!(matches!(
        machine.ack(&second),
        Err(Error::LeaseExpired { offset: 1 })
    ));
}

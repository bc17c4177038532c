//! Precision and recall of each detector on the corpus in `tests/detectors/`.

use warden_wire::detect::{Score, score_cases};
use warden_wire::inference::Detector;

const PRECISION_FLOOR: f64 = 0.95;
const RECALL_FLOOR: f64 = 0.9;

fn corpus(name: &str) -> String {
    let path = format!("{}/tests/detectors/{name}.txt", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {path}: {e}"))
}

#[test]
fn every_detector_is_precise_and_finds_what_it_should() {
    // Text without personal data counts against every detector.
    let shared = corpus("prompts");
    let mut report = Vec::new();
    let mut failed = false;
    for (name, detector) in Detector::ALL {
        let own = corpus(name);
        let (mut s, mut wrong) = score_cases(detector, &own);
        let (shared_score, shared_wrong) = score_cases(detector, &shared);
        s.false_positives += shared_score.false_positives;
        s.true_negatives += shared_score.true_negatives;
        wrong.extend(shared_wrong);
        assert!(
            s.true_positives + s.false_negatives >= 10,
            "{name}: too few positive cases"
        );
        assert!(
            s.true_negatives + s.false_positives >= 20,
            "{name}: too few negative cases"
        );
        let ok = s.precision() >= PRECISION_FLOOR && s.recall() >= RECALL_FLOOR;
        failed |= !ok;
        report.push(format!(
            "{name}: precision {:.3} recall {:.3} ({s:?}){}",
            s.precision(),
            s.recall(),
            wrong
                .iter()
                .map(|w| format!("\n    wrong: {w}"))
                .collect::<String>()
        ));
    }
    assert!(!failed, "below the floor:\n{}", report.join("\n"));
}

#[test]
fn scores_count_what_they_should() {
    let (s, wrong) = score_cases(
        Detector::Phone,
        "+ call +1 (415) 555-2671\n- 2024-01-15 12:30\n+ no number here\n# comment\n",
    );
    assert_eq!(
        s,
        Score {
            true_positives: 1,
            false_positives: 0,
            false_negatives: 1,
            true_negatives: 1
        }
    );
    assert_eq!(wrong, vec!["+ no number here".to_string()]);
    assert_eq!(s.precision(), 1.0);
    assert_eq!(s.recall(), 0.5);
}

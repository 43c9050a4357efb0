"""Which dossier category an XDM document goes to, from its XDS typeCode and classCode.

The typeCode (JDV_J07-XdsTypeCode-CISIS: LOINC, OID 2.16.840.1.113883.6.1, completed by TRE_A05-
TypeDocComplementaire, OID 1.2.250.1.213.1.1.4.12) says what the document is and decides first; the coarser
classCode (JDV_J06-XdsClassCode-CISIS / TRE_A03-ClasseDocument, OID 1.2.250.1.213.1.1.4.1) is the fallback.
Codes are compared without their coding scheme: LOINC codes (digits-check digit) and TRE_A05 codes (upper-case
words) do not overlap. Anything unknown goes to "Autres documents", where the patient can still find it.
"""

from __future__ import annotations

from .categories import Category

TYPE_CODES: dict[str, Category] = {
    # Résultats de biologie
    "11502-2": Category.BIOLOGIE,  # CR d'examens biologiques
    "11526-1": Category.BIOLOGIE,  # CR d'anatomie et de cytologie pathologiques
    "DOCPAT05": Category.BIOLOGIE,  # CR de biologie déposé par le patient
    # Radio, écho, scanner, IRM
    "18748-4": Category.RADIO_SC,  # CR d'imagerie médicale
    "18747-6": Category.RADIO_SC,  # CR de scanner
    "18755-9": Category.RADIO_SC,  # CR d'IRM
    "18760-9": Category.RADIO_SC,  # CR d'échographie
    "18782-3": Category.RADIO_SC,  # CR de radiologie
    "IMG-KOS": Category.RADIO_SC,  # référence d'objets d'un examen d'imagerie
    "DOCPAT04": Category.RADIO_SC,  # imagerie déposée par le patient
    # Comptes rendus
    "11488-4": Category.CPT_REND,  # CR de consultation ou de visite
    "11490-0": Category.CPT_REND,  # lettre de liaison à la sortie
    "34133-9": Category.CPT_REND,  # synthèse d'épisode de soins
    "18842-5": Category.CPT_REND,  # CR d'hospitalisation (discharge summary)
    "11504-8": Category.CPT_REND,  # CR opératoire
    "34874-8": Category.CPT_REND,  # CR opératoire (surgical operation note)
    "10213-7": Category.CPT_REND,  # CR d'anesthésie
    "11506-3": Category.CPT_REND,  # CR de suivi
    "15507-7": Category.CPT_REND,  # CR de passage aux urgences
    "18761-7": Category.CPT_REND,  # lettre de transfert
    "28616-1": Category.CPT_REND,  # note de transfert du médecin
    "34794-8": Category.CPT_REND,  # CR de réunion de concertation pluridisciplinaire
    "BIL_AUTO": Category.CPT_REND,  # CR de bilan d'évaluation de la perte d'autonomie
    "DOCPAT03": Category.CPT_REND,  # CR déposé par le patient
    # Ordonnances et soins
    "57833-6": Category.ORD_SOIN,  # prescription de produits de santé
    "57828-6": Category.ORD_SOIN,  # prescriptions
    "57832-8": Category.ORD_SOIN,  # prescription d'actes (examens, soins)
    "60593-1": Category.ORD_SOIN,  # dispensation médicamenteuse
    "18776-5": Category.ORD_SOIN,  # plan de soins
    "10160-0": Category.ORD_SOIN,  # historique de la médication
    "DISP_AUT": Category.ORD_SOIN,  # dispensation (autre)
    "PROT_ALD": Category.ORD_SOIN,  # protocole de soins ALD
    "DOCPAT02": Category.ORD_SOIN,  # traitement ou document de soins déposé par le patient
    # Ma santé en résumé
    "60591-5": Category.SYNTHESE,  # synthèse (patient summary, volet de synthèse médicale)
    "SYNTH": Category.SYNTHESE,  # synthèse
    "DOCPAT01": Category.SYNTHESE,  # synthèse déposée par le patient
    # Prévention et dépistages
    "11369-6": Category.DEPISTAG,  # historique des vaccinations
    "87273-9": Category.DEPISTAG,  # note de vaccination
    "DOCPAT06": Category.DEPISTAG,  # CR de prévention déposé par le patient
    # Certificats médicaux
    "CERT_DECL": Category.CERT_MED,  # certificat, déclaration
    # Directives anticipées
    "42348-3": Category.DIR_ANT,  # directives anticipées
    "EXPPAT_3": Category.DIR_ANT,  # directives anticipées
    # Pièces administratives
    "ATTEST-ASS-COMPL": Category.DOC_ADM,  # attestation d'assurance complémentaire
    "ATTEST-DROITS-AM": Category.DOC_ADM,  # attestation de droits à l'assurance maladie
    "ATTEST-VITALE": Category.DOC_ADM,  # attestation de carte Vitale
    "ATTEST-HEBGT": Category.DOC_ADM,  # attestation d'hébergement
    "ATTEST-RESID": Category.DOC_ADM,  # attestation de résidence
    "AUTORIS-SOINS": Category.DOC_ADM,  # autorisation de soins
    "REMB": Category.DOC_ADM,  # données de remboursement
}

CLASS_CODES: dict[str, Category] = {
    "10": Category.CPT_REND,  # Compte rendu
    "11": Category.SYNTHESE,  # Synthèse
    "31": Category.RADIO_SC,  # Imagerie médicale
    "42": Category.ORD_SOIN,  # Prescription
    "43": Category.ORD_SOIN,  # Dispensation
    "44": Category.ORD_SOIN,  # Plan de soins, protocole de soins
    "45": Category.ORD_SOIN,  # Traitement administré
    "52": Category.CERT_MED,  # Certificat, déclaration
    "60": Category.DOC_ADM,  # Données de remboursement
    "95": Category.DOC_ADM,  # Document de gestion
}


def category_for(type_code: str | None, class_code: str | None) -> Category:
    """The dossier category of a document with these codes (either may be missing)."""
    for code, table in ((type_code, TYPE_CODES), (class_code, CLASS_CODES)):
        category = table.get((code or "").strip().upper())
        if category is not None:
            return category
    return Category.AUTR_DOC

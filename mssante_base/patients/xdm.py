"""IHE XDM archives (``IHE_XDM.ZIP``): reading their XDS metadata and documents, and writing one.

Professionals send documents to a patient's space inside an XDM archive: ``IHE_XDM/<SUBSET>/METADATA.XML``
(an ebRIM ``SubmitObjectsRequest``) describes each document (patient, type, format, confidentiality) and
names its file in the same subset folder. The operator reads it to check the ``X-MSS-*`` headers and the
bridge files the documents in the patient's space, so the reader keeps each document's bytes.

The archive comes from outside: it is read in memory, never unpacked to disk, with caps on the number of
entries, the uncompressed total and each entry's compression ratio (zip bombs), no path leaving its folder,
and XML without DTD or entity (billion laughs, external entities). Errors say what is wrong with the
archive, never what a document or a file name contains: they end up in SMTP replies and logs.
"""

from __future__ import annotations

import hashlib
import html
import io
import posixpath
import re
import uuid
import xml.etree.ElementTree as ET
import zipfile
import zlib
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.errors import HeaderParseError
from email.message import EmailMessage
from typing import Any
from xml.parsers import expat

from mssante_base.patients.ins import Ins, InvalidIns, validate_ins

MAX_ENTRIES = 1000
MAX_TOTAL_SIZE = 100 * 1024 * 1024  # uncompressed bytes of the whole archive
MAX_RATIO = 100  # uncompressed / compressed, for entries larger than RATIO_FLOOR
RATIO_FLOOR = 1024 * 1024  # small entries (XML, text) may compress very well; only large ones can be bombs

LCM_NS = "urn:oasis:names:tc:ebxml-regrep:xsd:lcm:3.0"
RIM_NS = "urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0"
_RIM = f"{{{RIM_NS}}}"
ET.register_namespace("lcm", LCM_NS)  # written METADATA.XML uses the customary prefixes
ET.register_namespace("rim", RIM_NS)

# XDS identifiers (IHE ITI TF-3 §4.2.5): classification schemes, external identifiers, object types.
DOCUMENT_ENTRY = "urn:uuid:7edca82f-054d-47f2-a032-9b2a5b5186c1"
SUBMISSION_SET = "urn:uuid:a54d6aa5-d40d-43f9-88c5-b4633d873bdd"
DOC_PATIENT_ID = "urn:uuid:58a6f841-87b3-4a3e-92fd-a8ffeff98427"
DOC_UNIQUE_ID = "urn:uuid:2e82c1f6-a085-4c72-9da3-8640a32e42ab"
SET_PATIENT_ID = "urn:uuid:6b5aea1a-874d-4603-a4bc-96a0a7b38446"
SET_UNIQUE_ID = "urn:uuid:96fdda7c-d067-4183-912e-bf5ee74998a8"
SET_SOURCE_ID = "urn:uuid:554ac39e-e3fe-47fe-b233-965d2a147832"
SET_CONTENT_TYPE = "urn:uuid:aa543740-bdda-424e-8c96-df4873be8500"
CLASS_CODE = "urn:uuid:41a5887f-8865-4c09-adf7-e362475b143a"
TYPE_CODE = "urn:uuid:f0306f51-975f-434e-a61c-c59651d33983"
FORMAT_CODE = "urn:uuid:a09d5840-386c-46f2-b5ad-9c3699a4309d"
CONFIDENTIALITY_CODE = "urn:uuid:f4f85eac-e6cb-4883-b524-f2705394840f"
AUTHOR = "urn:uuid:93606bcf-9494-43ec-9b4e-a7748d1a838d"  # XDSDocumentEntry.author (slots, no code)
HAS_MEMBER = "urn:oasis:names:tc:ebxml-regrep:AssociationType:HasMember"

# Patient identifier OIDs of the INS (Référentiel INS): NIR, NIA, test NIR, demonstration NIR.
INS_OIDS = frozenset({"1.2.250.1.213.1.4.8", "1.2.250.1.213.1.4.9", "1.2.250.1.213.1.4.10", "1.2.250.1.213.1.4.11"})
# formatCodes of unstructured documents (XDS-SD and its French additions); anything else is a structured CDA.
XDS_SD_FORMATS = frozenset({
    "urn:ihe:iti:xds-sd:pdf:2008",
    "urn:ihe:iti:xds-sd:text:2008",
    "urn:ihe:iti-fr:xds-sd:rtf:2010",
    "urn:ihe:iti-fr:xds-sd:jpeg:2010",
})
XML_MIME_TYPES = frozenset({"text/xml", "application/xml", "application/cda+xml", "application/hl7-v3+xml"})
CONFIDENTIALITY_SCHEME = "2.16.840.1.113883.5.25"  # HL7 Confidentiality (N, R, V)


class XdmError(ValueError):
    """The archive is not a readable IHE XDM archive; the message says what is wrong (never content)."""


@dataclass(frozen=True)
class PatientId:
    """An XDS patient identifier (HL7 CX ``value^^^&OID&ISO``) split into its value and assigning OID."""

    value: str
    oid: str

    @classmethod
    def parse(cls, cx: str) -> PatientId:
        """The identifier of a CX value; XdmError when it has no value or no assigning authority OID."""
        components = cx.strip().split("^")
        authority = components[3].split("&") if len(components) > 3 else []
        value = components[0].strip()
        oid = authority[1].strip() if len(authority) > 1 else ""
        if not value or not oid:
            raise XdmError("a patient identifier is not of the form value^^^&OID&ISO")
        return cls(value, oid)

    @property
    def cx(self) -> str:
        """The HL7 CX form XDS metadata uses."""
        return f"{self.value}^^^&{self.oid}&ISO^{'NH' if self.is_ins else 'PI'}"

    @property
    def is_ins(self) -> bool:
        """Whether the assigning authority is the INS (NIR, NIA, or their test and demonstration OIDs)."""
        return self.oid in INS_OIDS

    @property
    def ins(self) -> Ins | None:
        """The matricule INS when this is an INS with a valid key, else None."""
        if not self.is_ins:
            return None
        try:
            return validate_ins(self.value)
        except InvalidIns:
            return None


@dataclass(frozen=True)
class SourcePatientInfo:
    """The identity traits in ``sourcePatientInfo`` (PID-5 name, PID-7 birth date, PID-8 sex)."""

    family_name: str = ""
    given_names: str = ""
    birth_date: str = ""
    sex: str = ""

    @classmethod
    def parse(cls, values: Iterable[str]) -> SourcePatientInfo:
        """Traits from the slot's ``PID-n|value`` lines; the legal name (type L) wins over other PID-5."""
        names: list[list[str]] = []
        fields: dict[str, str] = {}
        for line in values:
            key, _, value = line.partition("|")
            key = key.strip().upper()
            if key == "PID-5":
                names.append(value.strip().split("^"))
            elif key in ("PID-7", "PID-8"):
                fields.setdefault(key, value.strip())
        legal = [name for name in names if len(name) > 6 and name[6].upper() == "L"]
        name = (legal or names or [[]])[0]
        return cls(
            family_name=name[0].strip() if name else "",
            given_names=name[1].strip() if len(name) > 1 else "",
            birth_date=fields.get("PID-7", ""),
            sex=fields.get("PID-8", ""),
        )

    @property
    def complete(self) -> bool:
        """All four traits a qualified INS needs: family name, first name, birth date, sex."""
        return all((self.family_name, self.given_names, self.birth_date, self.sex))

    def slot_values(self, patient: PatientId) -> list[str]:
        """The ``sourcePatientInfo`` slot values for these traits."""
        values = [f"PID-3|{patient.cx}"]
        if self.family_name or self.given_names:
            values.append(f"PID-5|{self.family_name}^{self.given_names}^^^^^L")
        if self.birth_date:
            values.append(f"PID-7|{self.birth_date}")
        if self.sex:
            values.append(f"PID-8|{self.sex}")
        return values


@dataclass(frozen=True)
class Author:
    """A document's author: the ``authorPerson`` (HL7 XCN) and ``authorInstitution`` (HL7 XON) slots.

    The bridge shows the patient who wrote a document, which may be someone else than the sending mailbox
    (a secretary's or a hospital's application mailbox).
    """

    identifier: str = ""  # RPPS/ADELI-based national identifier (XCN.1)
    family_name: str = ""
    given_name: str = ""
    prefix: str = ""  # "Dr", "Pr" …
    id_authority: str = ""  # the identifier's assigning authority OID (XCN.9)
    institution: str = ""  # the organisation's name (XON.1)

    @classmethod
    def parse(cls, person: str | None, institution: str | None) -> Author | None:
        """The author of the two slot values, None when neither names anyone."""
        xcn = (person or "").strip().split("^")
        component = [part.strip() for part in xcn] + [""] * (9 - len(xcn))
        authority = component[8].split("&")
        author = cls(
            identifier=component[0], family_name=component[1], given_name=component[2], prefix=component[5],
            id_authority=authority[1].strip() if len(authority) > 1 else "",
            institution=(institution or "").strip().split("^")[0].strip(),
        )
        return author if author.display_name else None

    @property
    def display_name(self) -> str:
        """"Dr Jeanne MARTIN", else the institution's name, else ""."""
        person = " ".join(part for part in (self.prefix, self.given_name, self.family_name) if part)
        return person or self.institution

    @property
    def xcn(self) -> str:
        """The ``authorPerson`` value (empty when there is no person)."""
        if not (self.identifier or self.family_name or self.given_name):
            return ""
        authority = f"&{self.id_authority}&ISO" if self.id_authority else ""
        return f"{self.identifier}^{self.family_name}^{self.given_name}^^^{self.prefix}^^^{authority}"

    @property
    def xon(self) -> str:
        """The ``authorInstitution`` value (empty when there is no institution)."""
        return self.institution


@dataclass(frozen=True)
class Code:
    """A coded XDS attribute: the code, its coding scheme OID and display name."""

    code: str
    scheme: str = ""
    display: str = ""


@dataclass(frozen=True)
class XdmDocument:
    """One document (ExtrinsicObject) of an archive, with its metadata and bytes."""

    entry_id: str
    subset: str
    uri: str
    mime_type: str
    patient_id: PatientId | None
    source_patient: SourcePatientInfo
    class_code: Code | None
    type_code: Code | None
    format_code: Code | None
    confidentiality: tuple[Code, ...]
    title: str
    creation_time: str | None
    size: int | None
    hash: str | None
    unique_id: str | None
    data: bytes = field(repr=False)
    author: Author | None = None

    @property
    def is_cda(self) -> bool:
        """Whether this is a CDA document: XML, or (no MIME type given) a formatCode that is not XDS-SD.

        A non-XML MIME type (a PDF, a JPEG) is never CDA whatever its formatCode.
        """
        mime = self.mime_type.split(";")[0].strip().lower()
        if mime in XML_MIME_TYPES:
            return True
        if mime:
            return False
        return self.format_code is not None and self.format_code.code not in XDS_SD_FORMATS

    @property
    def qualified_ins(self) -> Ins | None:
        """The patient's INS when it is qualified: an INS identifier with the four identity traits."""
        ins = self.patient_id.ins if self.patient_id is not None else None
        return ins if ins is not None and self.source_patient.complete else None

    @property
    def checks_out(self) -> bool:
        """Whether the bytes match the size and SHA-1 hash the metadata gives (True where none is given)."""
        if self.size is not None and self.size != len(self.data):
            return False
        return self.hash is None or self.hash.lower() == hashlib.sha1(self.data, usedforsecurity=False).hexdigest()


@dataclass(frozen=True)
class XdmPackage:
    """The documents of every submission set (subset folder) of one archive."""

    documents: tuple[XdmDocument, ...]

    @property
    def patients(self) -> frozenset[PatientId]:
        """The distinct patients the documents are about (INS values compared in canonical form)."""
        return frozenset(_canonical(doc.patient_id) for doc in self.documents if doc.patient_id is not None)

    @property
    def cda_type_codes(self) -> frozenset[str]:
        """The typeCode values of the CDA documents (what ``X-MSS-CODECDA`` must list)."""
        return frozenset(doc.type_code.code for doc in self.documents if doc.is_cda and doc.type_code is not None)


@dataclass(frozen=True)
class NewDocument:
    """A document for :func:`build_xdm`."""

    filename: str
    data: bytes
    mime_type: str
    type_code: str
    type_scheme: str
    class_code: str
    format_code: str
    title: str
    confidentiality: tuple[str, ...] = ("N",)
    class_scheme: str = "1.2.250.1.213.1.1.4.1"  # JDV_J06 classCode (CI-SIS)
    format_scheme: str = "1.3.6.1.4.1.19376.1.2.3"  # IHE formatCode
    creation_time: str | None = None  # YYYYMMDDHHMMSS (UTC); None: now
    author: Author | None = None


def _canonical(patient: PatientId) -> PatientId:
    ins = patient.ins
    return PatientId(ins.value, patient.oid) if ins is not None else patient


# --- reading ------------------------------------------------------------------------------------------------


def read_xdm(data: bytes) -> XdmPackage:
    """The documents of an XDM archive; XdmError when it is not a safe, well-formed one."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, ValueError, OSError) as exc:
        raise XdmError("the attachment is not a readable ZIP archive") from exc
    with archive:
        entries = _checked_entries(archive)
        subsets = {
            name[len("ihe_xdm/"):-len("/metadata.xml")]: info
            for name, info in entries.items()
            if name.startswith("ihe_xdm/") and name.endswith("/metadata.xml") and name.count("/") == 2
        }
        if not subsets:
            raise XdmError("the archive has no IHE_XDM/<subset>/METADATA.XML")
        documents: list[XdmDocument] = []
        for key in sorted(subsets):
            info = subsets[key]
            subset = info.filename.split("/")[1]
            root = parse_xml(_read(archive, info), f"METADATA.XML of subset {subset}")
            documents.extend(_documents(root, subset, key, archive, entries))
    if not documents:
        raise XdmError("the archive's metadata describes no document")
    return XdmPackage(tuple(documents))


def _checked_entries(archive: zipfile.ZipFile) -> dict[str, zipfile.ZipInfo]:
    """The archive's files by lower-case name, after the caps and path checks."""
    infos = archive.infolist()
    if len(infos) > MAX_ENTRIES:
        raise XdmError(f"the archive has {len(infos)} entries, more than the {MAX_ENTRIES} allowed")
    if sum(info.file_size for info in infos) > MAX_TOTAL_SIZE:
        raise XdmError(f"the archive expands to more than {MAX_TOTAL_SIZE // (1024 * 1024)} MB")
    entries: dict[str, zipfile.ZipInfo] = {}
    for info in infos:
        name = info.filename
        if not _safe_path(name):
            raise XdmError("the archive holds a path leaving its folder (absolute, '..' or backslash)")
        if info.flag_bits & 0x1:
            raise XdmError("the archive holds an encrypted entry")
        if info.file_size > RATIO_FLOOR and info.file_size > MAX_RATIO * max(info.compress_size, 1):
            raise XdmError(f"an entry of the archive expands more than {MAX_RATIO} times (zip bomb)")
        if info.is_dir():
            continue
        key = name.lower()
        if key in entries:
            raise XdmError("the archive holds two entries with the same name (ignoring case)")
        entries[key] = info
    return entries


def _safe_path(name: str) -> bool:
    if not name or "\\" in name or "\x00" in name or name.startswith("/") or ":" in name.split("/")[0]:
        return False
    return ".." not in name.split("/")


def _read(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> bytes:
    """An entry's bytes, never more than its declared size (the total was capped from those sizes)."""
    try:
        with archive.open(info) as entry:
            data = entry.read(info.file_size + 1)
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError, ValueError, OSError) as exc:
        raise XdmError("an entry of the archive is corrupt or uses an unsupported compression") from exc
    if len(data) != info.file_size:
        raise XdmError("an entry of the archive does not have its declared size")
    return data


def safe_parser(what: str) -> expat.XMLParserType:
    """An expat parser that refuses any DTD or entity declaration (billion laughs, external entities).

    Used directly, not through ElementTree, which hides these handlers; ``what`` names the document in errors.
    """
    parser = expat.ParserCreate(namespace_separator="}")

    def refuse(*_: object) -> None:
        raise XdmError(f"{what} declares a DTD or entities, which are not allowed")

    parser.StartDoctypeDeclHandler = refuse
    parser.EntityDeclHandler = refuse
    parser.UnparsedEntityDeclHandler = refuse
    parser.ExternalEntityRefHandler = refuse
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    return parser


def parse_xml(data: bytes, what: str) -> ET.Element:
    """An element tree of untrusted XML through :func:`safe_parser`; XdmError when refused or malformed."""
    builder = ET.TreeBuilder()
    parser = safe_parser(what)

    def start(name: str, attributes: dict[str, str]) -> None:
        builder.start(_clark(name), {_clark(key): value for key, value in attributes.items()})

    parser.StartElementHandler = start
    parser.EndElementHandler = lambda name: builder.end(_clark(name))
    parser.CharacterDataHandler = builder.data
    parser.buffer_text = True
    try:
        parser.Parse(data, True)
        return builder.close()
    except expat.ExpatError as exc:
        raise XdmError(f"{what} is not well-formed XML (line {exc.lineno})") from exc
    except AssertionError as exc:  # TreeBuilder.close() on an empty document
        raise XdmError(f"{what} is empty") from exc


def _clark(name: str) -> str:
    return f"{{{name}" if "}" in name else name


def _documents(root: ET.Element, subset: str, key: str, archive: zipfile.ZipFile,
               entries: Mapping[str, zipfile.ZipInfo]) -> list[XdmDocument]:
    """The documents one METADATA.XML describes, with their bytes from the subset folder."""
    objects = list(root.iter(f"{_RIM}ExtrinsicObject"))
    nested: set[int] = set()
    for owner in [*objects, *root.iter(f"{_RIM}RegistryPackage")]:
        nested.update(id(child) for child in owner)
    classifications: dict[str, list[ET.Element]] = defaultdict(list)
    identifiers: dict[str, list[ET.Element]] = defaultdict(list)
    for element in root.iter(f"{_RIM}Classification"):
        if id(element) not in nested:
            classifications[element.get("classifiedObject", "")].append(element)
    for element in root.iter(f"{_RIM}ExternalIdentifier"):
        if id(element) not in nested:
            identifiers[element.get("registryObject", "")].append(element)
    prefix = f"ihe_xdm/{key}/"
    files = [info.filename[len(prefix):] for name, info in entries.items()  # as named, relative to the subset
             if name.startswith(prefix) and name != f"{prefix}metadata.xml"]
    documents = []
    for number, element in enumerate(objects, start=1):
        entry_id = element.get("id", "")
        slots = _slots(element)
        classified = [*element.findall(f"{_RIM}Classification"), *classifications.get(entry_id, ())]
        identified = [*element.findall(f"{_RIM}ExternalIdentifier"), *identifiers.get(entry_id, ())]
        codes = defaultdict(list)
        for classification in classified:
            codes[classification.get("classificationScheme", "")].append(_code(classification))
        ids = {ident.get("identificationScheme", ""): ident.get("value", "") for ident in identified}
        where = f"document {number} of subset {subset}"
        uri = _uri(slots.get("URI", []), files, where)
        path = _resolve(prefix, uri, entries, where)
        documents.append(XdmDocument(
            entry_id=entry_id,
            subset=subset,
            uri=uri,
            mime_type=element.get("mimeType", ""),
            patient_id=PatientId.parse(ids[DOC_PATIENT_ID]) if ids.get(DOC_PATIENT_ID) else None,
            source_patient=SourcePatientInfo.parse(slots.get("sourcePatientInfo", [])),
            class_code=_first(codes[CLASS_CODE]),
            type_code=_first(codes[TYPE_CODE]),
            format_code=_first(codes[FORMAT_CODE]),
            confidentiality=tuple(codes[CONFIDENTIALITY_CODE]),
            title=_name(element),
            creation_time=_first(slots.get("creationTime", [])),
            size=_int(_first(slots.get("size", [])), where),
            hash=_first(slots.get("hash", [])),
            unique_id=ids.get(DOC_UNIQUE_ID) or None,
            data=_read(archive, entries[path]),
            author=_author(classified),
        ))
    return documents


def _slots(element: ET.Element) -> dict[str, list[str]]:
    return {
        slot.get("name", ""): [(value.text or "").strip() for value in slot.iter(f"{_RIM}Value")]
        for slot in element.findall(f"{_RIM}Slot")
    }


def _author(classified: list[ET.Element]) -> Author | None:
    """The first author classification that names a person or an institution."""
    for classification in classified:
        if classification.get("classificationScheme") == AUTHOR:
            slots = _slots(classification)
            author = Author.parse(_first(slots.get("authorPerson", [])), _first(slots.get("authorInstitution", [])))
            if author is not None:
                return author
    return None


def _name(element: ET.Element) -> str:
    localized = element.find(f"{_RIM}Name/{_RIM}LocalizedString")
    return localized.get("value", "") if localized is not None else ""


def _code(classification: ET.Element) -> Code:
    scheme = _slots(classification).get("codingScheme", [])
    return Code(classification.get("nodeRepresentation", ""), scheme[0] if scheme else "", _name(classification))


def _first(values: list[Any]) -> Any:
    return values[0] if values else None


def _int(text: str | None, where: str) -> int | None:
    if text is None:
        return None
    try:
        return int(text)
    except ValueError as exc:
        raise XdmError(f"{where} has a size that is not a number") from exc


_URI_SEGMENT = re.compile(r"[0-9]{1,9}\|")  # ASCII digits only: int() refuses "²", which isdigit() accepts


def _uri(values: list[str], files: list[str], where: str) -> str:
    """The URI slot (long ones split as ``1|…``, ``2|…``), or the subset's only file when there is none."""
    if len(values) > 1 and all(_URI_SEGMENT.match(value) for value in values):
        values = ["".join(v.partition("|")[2] for v in sorted(values, key=lambda v: int(v.partition("|")[0])))]
    if values and values[0]:
        return values[0]
    if len(files) == 1:
        return files[0]
    raise XdmError(f"{where} has no URI and its subset holds several files")


def _resolve(prefix: str, uri: str, entries: Mapping[str, zipfile.ZipInfo], where: str) -> str:
    """The archive entry a URI names: relative to the subset folder, or to the archive's root."""
    relative = uri.strip().replace("\\", "/").lower()
    if relative.startswith("/") or ".." in relative.split("/"):
        raise XdmError(f"{where} has a URI leaving its folder")
    for candidate in (posixpath.normpath(prefix + relative), posixpath.normpath(relative)):
        if candidate in entries:
            return candidate
    raise XdmError(f"{where} names a file that is not in the archive")


def find_xdm_attachments(message: EmailMessage) -> list[bytes]:
    """The XDM archives a message carries: an attachment named IHE_XDM.ZIP, or any ZIP with an IHE_XDM folder."""
    found = []
    for part in message.walk():
        if part.is_multipart():
            continue
        try:  # a sender's malformed MIME headers can trip the email package; such a part is no archive
            filename = part.get_filename() or ""
            content_type = part.get_content_type()
            if not could_be_xdm(filename, content_type):
                continue
            payload = part.get_payload(decode=True)
        except (ValueError, IndexError, LookupError, TypeError, HeaderParseError):
            continue
        if isinstance(payload, bytes) and is_xdm_archive(filename, content_type, payload):
            found.append(payload)
    return found


def could_be_xdm(filename: str | None, content_type: str) -> bool:
    """Whether an attachment's name or declared type makes it worth opening as an XDM archive."""
    name = (filename or "").strip().lower()
    return name == "ihe_xdm.zip" or name.endswith(".zip") or "zip" in content_type.lower()


def is_xdm_archive(filename: str | None, content_type: str, data: bytes) -> bool:
    """Whether an attachment is an XDM archive: named IHE_XDM.ZIP, or a ZIP (by name or type) with IHE_XDM/.

    The operator's header checks and the bridge's filing share this rule, so both see the same archives.
    """
    if not data or not could_be_xdm(filename, content_type):
        return False
    return (filename or "").strip().lower() == "ihe_xdm.zip" or _has_xdm_folder(data)


def _has_xdm_folder(data: bytes) -> bool:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            return any(name.lower().startswith("ihe_xdm/") for name in archive.namelist())
    except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, ValueError, OSError):
        return False


# --- writing ------------------------------------------------------------------------------------------------


def build_xdm(patient: PatientId, documents: list[NewDocument], *, subset: str = "SUBSET01",
              source_patient_info: Mapping[str, str] | None = None) -> bytes:
    """An XDM archive of ``documents`` for ``patient`` (tests, the demo, benchmarks).

    ``source_patient_info`` keys: family_name, given_names, birth_date (YYYYMMDD), sex (M/F/U).
    """
    if not documents:
        raise ValueError("an XDM archive needs at least one document")
    if not subset or "/" in subset or "\\" in subset or subset in (".", ".."):
        raise ValueError("the subset is a plain folder name")
    names = [doc.filename for doc in documents]
    if any(not _plain_name(name) for name in names) or len({n.lower() for n in names}) != len(names):
        raise ValueError("document file names must be distinct plain names other than METADATA.XML")
    traits = SourcePatientInfo(**dict(source_patient_info or {}))
    metadata = _metadata(patient, documents, traits)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("README.TXT", _README)
        archive.writestr("INDEX.HTM", _index(subset, documents))
        archive.writestr(f"IHE_XDM/{subset}/METADATA.XML", metadata)
        for doc in documents:
            archive.writestr(f"IHE_XDM/{subset}/{doc.filename}", doc.data)
    return buffer.getvalue()


def _plain_name(name: str) -> bool:
    """A file name the reader finds again: no folder, not "." and no surrounding space (slot values are trimmed)."""
    return (bool(name) and _safe_path(name) and "/" not in name and name.lower() != "metadata.xml"
            and name != "." and name == name.strip())


_README = ("This medium holds health documents in the IHE XDM format (IHE ITI TF-1 §16).\r\n"
           "Open INDEX.HTM for the list; IHE_XDM/<subset>/METADATA.XML describes them.\r\n"
           "Producer: mssante-operator\r\n")


def _index(subset: str, documents: list[NewDocument]) -> str:
    rows = "".join(f'<li><a href="IHE_XDM/{html.escape(subset)}/{html.escape(doc.filename)}">'
                   f"{html.escape(doc.title)}</a></li>" for doc in documents)
    return f"<!DOCTYPE html><html><head><title>IHE XDM</title></head><body><ul>{rows}</ul></body></html>"


def _metadata(patient: PatientId, documents: list[NewDocument], traits: SourcePatientInfo) -> bytes:
    now = datetime.now(UTC).strftime("%Y%m%d%H%M%S")
    request = ET.Element(f"{{{LCM_NS}}}SubmitObjectsRequest")
    objects = _sub(request, "RegistryObjectList")
    set_id = f"urn:uuid:{uuid.uuid4()}"
    package = _sub(objects, "RegistryPackage", id=set_id, objectType="urn:oasis:names:tc:ebxml-regrep:ObjectType:"
                   "RegistryObject:RegistryPackage")
    _slot(package, "submissionTime", [now])
    _localized(package, "Name", "Documents")
    first = documents[0]
    _classify(package, SET_CONTENT_TYPE, set_id, Code(first.type_code, first.type_scheme, first.title))
    _identify(package, SET_UNIQUE_ID, set_id, _new_oid(), "XDSSubmissionSet.uniqueId")
    _identify(package, SET_SOURCE_ID, set_id, _new_oid(), "XDSSubmissionSet.sourceId")
    _identify(package, SET_PATIENT_ID, set_id, patient.cx, "XDSSubmissionSet.patientId")
    for doc in documents:
        doc_id = f"urn:uuid:{uuid.uuid4()}"
        entry = _sub(objects, "ExtrinsicObject", id=doc_id, mimeType=doc.mime_type, objectType=DOCUMENT_ENTRY)
        _slot(entry, "creationTime", [doc.creation_time or now])
        _slot(entry, "languageCode", ["fr-FR"])
        _slot(entry, "sourcePatientId", [patient.cx])
        _slot(entry, "sourcePatientInfo", traits.slot_values(patient))
        _slot(entry, "URI", [doc.filename])
        _slot(entry, "size", [str(len(doc.data))])
        _slot(entry, "hash", [hashlib.sha1(doc.data, usedforsecurity=False).hexdigest()])
        _localized(entry, "Name", doc.title)
        _classify(entry, CLASS_CODE, doc_id, Code(doc.class_code, doc.class_scheme, doc.class_code))
        _classify(entry, TYPE_CODE, doc_id, Code(doc.type_code, doc.type_scheme, doc.title))
        _classify(entry, FORMAT_CODE, doc_id, Code(doc.format_code, doc.format_scheme, doc.format_code))
        for level in doc.confidentiality:
            _classify(entry, CONFIDENTIALITY_CODE, doc_id, Code(level, CONFIDENTIALITY_SCHEME, level))
        if doc.author is not None:
            _author_classification(entry, doc_id, doc.author)
        _identify(entry, DOC_PATIENT_ID, doc_id, patient.cx, "XDSDocumentEntry.patientId")
        _identify(entry, DOC_UNIQUE_ID, doc_id, _new_oid(), "XDSDocumentEntry.uniqueId")
        association = _sub(objects, "Association", id=f"urn:uuid:{uuid.uuid4()}", associationType=HAS_MEMBER,
                           sourceObject=set_id, targetObject=doc_id)
        _slot(association, "SubmissionSetStatus", ["Original"])
    _sub(objects, "Classification", id=f"urn:uuid:{uuid.uuid4()}", classifiedObject=set_id,
         classificationNode=SUBMISSION_SET)
    return ET.tostring(request, encoding="utf-8", xml_declaration=True)


def _sub(parent: ET.Element, tag: str, **attributes: str) -> ET.Element:
    return ET.SubElement(parent, f"{_RIM}{tag}", attributes)


def _slot(parent: ET.Element, name: str, values: list[str]) -> None:
    value_list = _sub(_sub(parent, "Slot", name=name), "ValueList")
    for value in values:
        _sub(value_list, "Value").text = value


def _localized(parent: ET.Element, tag: str, value: str) -> None:
    _sub(_sub(parent, tag), "LocalizedString", value=value)


def _classify(parent: ET.Element, scheme: str, owner: str, code: Code) -> None:
    element = _sub(parent, "Classification", id=f"urn:uuid:{uuid.uuid4()}", classificationScheme=scheme,
                   classifiedObject=owner, nodeRepresentation=code.code)
    _slot(element, "codingScheme", [code.scheme])
    _localized(element, "Name", code.display)


def _author_classification(parent: ET.Element, owner: str, author: Author) -> None:
    element = _sub(parent, "Classification", id=f"urn:uuid:{uuid.uuid4()}", classificationScheme=AUTHOR,
                   classifiedObject=owner, nodeRepresentation="")
    if author.xcn:
        _slot(element, "authorPerson", [author.xcn])
    if author.xon:
        _slot(element, "authorInstitution", [author.xon])


def _identify(parent: ET.Element, scheme: str, owner: str, value: str, name: str) -> None:
    element = _sub(parent, "ExternalIdentifier", id=f"urn:uuid:{uuid.uuid4()}", identificationScheme=scheme,
                   registryObject=owner, value=value)
    _localized(element, "Name", name)


def _new_oid() -> str:
    """A unique OID under 2.25 (UUID-derived, ITU-T X.667), for unique and source ids."""
    return f"2.25.{uuid.uuid4().int}"
